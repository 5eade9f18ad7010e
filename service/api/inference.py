"""inference.GRPCInferenceService (Open Inference Protocol v2): decode, call, encode."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeAlias

import grpc.aio

from service import __version__, tracing
from service.api import codec
from service.datatypes import DATATYPES
from service.gen.inference import grpc_predict_v2_pb2 as pb
from service.gen.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from service.registry.manifest import TensorSpec
from service.serving.cascade import CascadePlane
from service.serving.dataplane import ModelDescription

PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["model_configuration", "paradigm"]
_CONFIG_TYPES = {name: getattr(pb, d.config_type) for name, d in DATATYPES.items()}

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        dataplane: CascadePlane,
        *,
        ready: Callable[[], bool],
        max_batch_size: int,
    ) -> None:
        self._dataplane = dataplane
        self._ready = ready
        self._max_batch_size = max_batch_size

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._ready())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        codec.check_strings(request)
        ready = await self._dataplane.ready(request.name, request.version)
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="paradigm", version=__version__, extensions=EXTENSIONS
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        codec.check_strings(request)
        model = await self._dataplane.describe(request.name, request.version)
        response = pb.ModelMetadataResponse(
            name=model.name,
            versions=model.versions,
            platform=PLATFORM,
            inputs=[_metadata(spec) for spec in model.inputs],
            outputs=[_metadata(spec) for spec in model.outputs],
        )
        # ModelConfig has no free-form field for these: it says the device through
        # instance_group's kind.
        for key, value in model.parameters.items():
            response.parameters[key].string_param = value
        return response

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        arrived = time.perf_counter()
        remaining = context.time_remaining()
        deadline = None if remaining is None else arrived + remaining
        decoded = codec.decode_request(request, arrived=arrived, deadline=deadline)
        response = await self._dataplane.infer(decoded)
        if tracing.ENABLED and tracing.recording():
            with tracing.span("encode"):
                return codec.encode_response(response, typed=not request.raw_input_contents)
        return codec.encode_response(response, typed=not request.raw_input_contents)

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Context
    ) -> pb.ModelConfigResponse:
        codec.check_strings(request)
        model = await self._dataplane.describe(request.name, request.version)
        return pb.ModelConfigResponse(config=model_config(model, self._max_batch_size))


def model_config(model: ModelDescription, max_batch_size: int) -> pb.ModelConfig:
    """Triton's ModelConfig of a version (ModelConfig over gRPC, /config over REST)."""
    specs = [*model.inputs, *model.outputs]
    # Triton's convention: with max_batch_size > 0 the dims leave out the batch dim.
    batched = all(spec.shape and spec.shape[0] == -1 for spec in specs)
    skip = 1 if batched else 0
    kind = (
        pb.ModelInstanceGroup.KIND_GPU if model.device == "cuda"
        else pb.ModelInstanceGroup.KIND_CPU
    )  # fmt: skip
    return pb.ModelConfig(
        name=model.name,
        platform=PLATFORM,
        backend="onnxruntime",
        max_batch_size=max_batch_size if batched else 0,
        input=[
            pb.ModelInput(
                name=s.name, data_type=_CONFIG_TYPES.get(s.datatype, 0), dims=s.shape[skip:]
            )
            for s in model.inputs
        ],
        output=[
            pb.ModelOutput(
                name=s.name, data_type=_CONFIG_TYPES.get(s.datatype, 0), dims=s.shape[skip:]
            )
            for s in model.outputs
        ],
        instance_group=[pb.ModelInstanceGroup(name=model.name, count=1, kind=kind)],
    )


def _metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=spec.datatype, shape=spec.shape
    )

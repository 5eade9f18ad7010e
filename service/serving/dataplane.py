"""The one data plane: every inference, whatever the transport, goes through `infer`.

It resolves the model, checks the inputs against the model's signature (name, datatype,
shape, finite values) before running anything, runs the session off the event loop, and
records the serving metrics once, here.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor

import numpy as np

from service.cost.ledger import CostLedger
from service.errors import InvalidArgument, ParadigmError
from service.logs import model_name_var, model_version_var, request_id_var
from service.serving.loaded import LoadedModel, LoadedModels
from service.serving.tensors import InferInput, InferOutput, InferRequest, InferResponse

FLOAT_TYPES = ("FP16", "FP32", "FP64")


class DataPlane:
    """Validates, runs and measures inference requests."""

    def __init__(
        self,
        models: LoadedModels,
        ledger: CostLedger,
        executor: Executor,
        max_batch_size: int,
    ) -> None:
        self.models = models
        self._ledger = ledger
        self._executor = executor
        self._max_batch_size = max_batch_size

    async def infer(self, request: InferRequest) -> InferResponse:
        arrived = request.arrived or time.perf_counter()
        model_name_var.set(request.model_name)
        request_id_var.set(request.id or "-")
        model = await self.models.get(request.model_name, request.model_version)
        model_version_var.set(model.version)
        series = model.series
        series.in_flight.inc()
        try:
            feeds, rows = self._check_inputs(model, request.inputs)
            output_names = self._check_outputs(model, request.outputs)
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._run, model, feeds, output_names, rows, time.perf_counter()
            )
        except ParadigmError as exc:
            series.failed(exc.status.name)
            raise
        except Exception:
            series.failed("INTERNAL")
            raise
        finally:
            series.in_flight.dec()
        outputs = [
            InferOutput(name=name, datatype=model.output_types[name], data=data)
            for name, data in zip(output_names, results, strict=True)
        ]
        series.ok.inc()
        series.predictions.inc(rows)
        series.batch_size.observe(rows)
        series.duration.observe(time.perf_counter() - arrived)
        return InferResponse(
            model_name=model.name,
            model_version=model.version,
            outputs=outputs,
            id=request.id,
            parameters={"device": model.device},
        )

    def _run(
        self,
        model: LoadedModel,
        feeds: dict[str, np.ndarray],
        output_names: list[str],
        rows: int,
        submitted: float,
    ) -> list[np.ndarray]:
        """Runs in an inference thread: the session, its timing and its cost."""
        started = time.perf_counter()
        cpu_started = time.thread_time()
        results = model.runtime.run(feeds, output_names)
        compute = time.perf_counter() - started
        # CPU time of this thread is the model's CPU time as long as ONNX Runtime runs the
        # graph in the calling thread (intra_op_threads=1, the default). On CUDA the GPU is
        # what the run occupies, for its wall time.
        device_seconds = compute if model.device == "cuda" else time.thread_time() - cpu_started
        model.series.queue_wait.observe(started - submitted)
        model.series.compute.observe(compute)
        self._ledger.serve(model.series, rows, device_seconds)
        return results

    def _check_inputs(
        self, model: LoadedModel, inputs: list[InferInput]
    ) -> tuple[dict[str, np.ndarray], int]:
        expected = model.inputs
        given = {tensor.name: tensor for tensor in inputs}
        if len(given) != len(inputs):
            raise InvalidArgument("an input name appears more than once")
        described = ", ".join(
            f"{spec.name} {spec.datatype} {list(spec.shape)}" for spec in expected.values()
        )
        unknown = sorted(set(given) - set(expected))
        if unknown:
            raise InvalidArgument(
                f"unexpected input {unknown[0]!r}; model {model.name!r} expects: {described}"
            )
        missing = sorted(set(expected) - set(given))
        if missing:
            raise InvalidArgument(
                f"missing input {missing[0]!r}; model {model.name!r} expects: {described}"
            )
        feeds: dict[str, np.ndarray] = {}
        rows = 0
        for name, spec in expected.items():
            tensor = given[name]
            if tensor.datatype != spec.datatype:
                raise InvalidArgument(
                    f"input {name!r} has datatype {tensor.datatype}; model expects {spec.datatype}"
                )
            shape = tensor.data.shape
            if len(shape) != len(spec.shape) or any(
                want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
            ):
                raise InvalidArgument(
                    f"input {name!r} has shape {list(shape)}; model expects "
                    f"{list(spec.shape)} (-1 means any size)"
                )
            if shape and spec.shape and spec.shape[0] == -1:
                rows = max(rows, shape[0])
                if shape[0] == 0:
                    # Measured: ONNX Runtime 1.31 aborts the whole process on an LSTM given
                    # an empty batch, so no empty batch ever reaches a session.
                    raise InvalidArgument(f"input {name!r} has an empty batch (0 rows)")
                if shape[0] > self._max_batch_size:
                    raise InvalidArgument(
                        f"input {name!r} has a batch of {shape[0]} rows; the most is "
                        f"{self._max_batch_size}"
                    )
            if tensor.datatype in FLOAT_TYPES and not np.isfinite(tensor.data).all():
                raise InvalidArgument(
                    f"input {name!r} holds NaN or infinity; values must be finite"
                )
            feeds[name] = tensor.data
        return feeds, rows or 1  # a model without a batch dimension predicts one row

    def _check_outputs(self, model: LoadedModel, wanted: list[str]) -> list[str]:
        if not wanted:
            return model.output_names
        unknown = [name for name in wanted if name not in model.output_types]
        if unknown:
            raise InvalidArgument(
                f"unknown output {unknown[0]!r}; model {model.name!r} has outputs "
                f"{model.output_names}"
            )
        return list(wanted)

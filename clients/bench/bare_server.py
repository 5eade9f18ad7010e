"""The serving limit: the least a grpc.aio OIP v2 server can do for one ONNX file.

Decode raw inputs with np.frombuffer, run the session in a small thread pool, encode raw
outputs. No validation, no metrics, no model registry: whatever our server costs beyond
this is the price of its features, which is what the benchmark compares.

    python -m clients.bench.bare_server --model F.onnx --name NAME --port 0 --port-file P
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc.aio
import numpy as np

from clients import dtypes
from clients.bench.inprocess import load_session
from service.gen.inference import grpc_predict_v2_pb2 as pb
from service.gen.inference import grpc_predict_v2_pb2_grpc as pb_grpc

#: ONNX Runtime output types -> OIP datatype strings (what the served models return).
_ORT_DATATYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
}


class BareInference(pb_grpc.GRPCInferenceServiceServicer):
    """ModelInfer for one session, plus the liveness calls clients poll before sending."""

    def __init__(self, model: Path, name: str, workers: int = 2) -> None:
        self._session = load_session(model)
        self._name = name
        self._outputs = [
            (node.name, _ORT_DATATYPES.get(node.type, node.type))
            for node in self._session.get_outputs()
        ]
        self._output_names = [name for name, _ in self._outputs]
        self._dtypes = {d.name: dtypes.dtype_of(d.name) for d in dtypes.DATATYPES}
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="bare-ort")

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> Any:
        feeds = {
            tensor.name: np.frombuffer(raw, dtype=self._dtypes[tensor.datatype]).reshape(
                tuple(tensor.shape)
            )
            for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True)
        }
        results = await asyncio.get_running_loop().run_in_executor(
            self._executor, self._session.run, self._output_names, feeds
        )
        response = pb.ModelInferResponse(model_name=self._name, id=request.id)
        for (name, datatype), value in zip(self._outputs, results, strict=True):
            response.outputs.add(name=name, datatype=datatype, shape=value.shape)
            response.raw_output_contents.append(value.tobytes())
        return response

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=request.name == self._name)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


async def serve(model: Path, name: str, host: str, port: int, port_file: Path | None) -> None:
    servicer = BareInference(model, name)
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    if port_file is not None:
        # Written whole, then renamed: a reader never sees an empty or partial port.
        partial = port_file.with_name(port_file.name + ".tmp")
        partial.write_text(str(bound))
        partial.replace(port_file)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop(1.0)
    servicer.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clients.bench.bare_server",
        description="A minimal grpc.aio OIP v2 server for one ONNX file (benchmark limit).",
    )
    parser.add_argument("--model", type=Path, required=True, help="ONNX file")
    parser.add_argument("--name", required=True, help="model name it answers to")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, help="write the bound port here")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.model, args.name, args.host, args.port, args.port_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Wait for an Open Inference Protocol v2 server and prove it serves digits-logistic.

    python -m clients.bench.peers.probe --target 127.0.0.1:8101 --model digits-logistic

Polls ServerReady and ModelReady over gRPC until both say yes (or --timeout passes), then
prints ModelMetadata and sends one ModelInfer: the first digits row as FP32 [1, 64] in
raw_input_contents, the way the benchmark driver sends it. The answer is decoded whether it
comes in raw_output_contents or typed `contents` (both Paradigm and MLServer 1.7 answer a
raw request raw), and its label (`label` for Paradigm, `predict` for MLServer's sklearn
runtime) must be the row's digit, 0. Exit status 1 on a timeout or a wrong answer.
"""

from __future__ import annotations

import argparse
import sys
import time

import grpc
import numpy as np

from clients.client import InferResult
from service.gen.inference import grpc_predict_v2_pb2 as oip
from service.gen.inference import grpc_predict_v2_pb2_grpc as oip_grpc


def wait_ready(stub: oip_grpc.GRPCInferenceServiceStub, model: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            server = stub.ServerReady(oip.ServerReadyRequest(), timeout=2).ready
            ready = server and stub.ModelReady(oip.ModelReadyRequest(name=model), timeout=2).ready
            if ready:
                return
            last = f"ServerReady={server}, ModelReady=False"
        except grpc.RpcError as error:  # not listening yet, or the model is still loading
            last = f"{error.code().name}: {error.details()}"
        time.sleep(0.5)
    raise TimeoutError(f"not ready after {timeout_s:.0f} s ({last})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the gRPC endpoint")
    parser.add_argument("--model", default="digits-logistic")
    parser.add_argument("--input", default="input", help="input tensor name to send")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for ready")
    args = parser.parse_args(argv)

    from sklearn.datasets import load_digits  # client side only: the row to send

    digits = load_digits()
    row = np.asarray(digits.data[:1], dtype=np.float32)
    with grpc.insecure_channel(args.target) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        try:
            wait_ready(stub, args.model, args.timeout)
        except TimeoutError as error:
            print(f"{args.target}: {error}", file=sys.stderr)
            return 1
        meta = stub.ModelMetadata(oip.ModelMetadataRequest(name=args.model), timeout=10)
        server = stub.ServerMetadata(oip.ServerMetadataRequest(), timeout=10)
        print(f"{args.target}: {server.name} {server.version} ready; model {meta.name}")
        for kind, tensors in (("input", meta.inputs), ("output", meta.outputs)):
            for t in tensors:
                print(f"  {kind:6} {t.name} {t.datatype} {list(t.shape)}")
        request = oip.ModelInferRequest(
            model_name=args.model,
            inputs=[oip.ModelInferRequest.InferInputTensor(
                name=args.input, datatype="FP32", shape=list(row.shape)
            )],
            raw_input_contents=[row.tobytes()],
        )  # fmt: skip
        response = stub.ModelInfer(request, timeout=10)
    outputs = InferResult(response).outputs
    how = "raw_output_contents" if response.raw_output_contents else "typed contents"
    for name, value in outputs.items():
        print(f"  answer {name} {value.dtype} {list(value.shape)} ({how}): {value.ravel()[:10]}")
    label_name = next((n for n in ("label", "predict") if n in outputs), None)
    if label_name is None or int(outputs[label_name].ravel()[0]) != int(digits.target[0]):
        print(f"{args.target}: expected label {digits.target[0]}, got {outputs}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

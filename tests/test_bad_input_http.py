"""The bad-input corpus of test_bad_input_corpus.py replayed over REST.

Every inference, metadata and readiness case there is turned into the HTTP request that
says the same thing (raw contents as the binary tensor data extension, typed contents as
JSON "data") and must get the HTTP status of its gRPC status (service/api/errors.
HTTP_STATUS) with the same hint, as the protocol's {"error": message}. Where HTTP says a
thing differently (a path cannot carry "/", a body has no protobuf to mangle) the case
names the REST wording in HTTP_ONLY below; cases with no HTTP form are listed in SKIPPED.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import grpc
import numpy as np
import pytest

from service.api.errors import HTTP_STATUS
from service.gen.inference import grpc_predict_v2_pb2 as ipb
from tests.rest import Answer, call
from tests.server import RunningServer
from tests.test_bad_input_corpus import CASES, IRIS_ROWS, SMALL_MESSAGE_BYTES, Case

#: gRPC-only cases: bytes that are not a protobuf.
SKIPPED = {
    "infer-not-a-protobuf": "HTTP bodies are JSON; bad JSON is covered in test_rest.py",
}
#: (status, fragment) where the REST answer rightly differs from the gRPC one.
HTTP_ONLY: dict[str, tuple[int, str]] = {
    # "/" cannot be in a path segment: the router finds no such endpoint.
    "infer-model-name-traversal": (404, "no endpoint /v2/models/../iris-lr/infer"),
    "infer-model-name-10k": (400, "model name is 10000 characters long"),
    "metadata-name-10k": (400, "model name is 10000 characters long"),
    "infer-raw-and-typed": (400, 'has both "data" and binary_data_size; send it one way'),
    "infer-raw-entries-count": (400, "binary_data_size add up to 16"),
    "infer-typed-count": (400, '7 values in "data", but shape [2, 4] needs 8'),
    # JSON numbers are FP16 as well as any other float type: the model's signature refuses.
    "infer-typed-fp16": (400, "has datatype FP16; model expects FP32"),
    # 413, not 429: the same body never fits, and 429 tells clients to retry.
    "infer-message-over-limit": (413, f"over the limit of {SMALL_MESSAGE_BYTES}"),
}


class _Recorder:
    """Stands in for the corpus's Api: a case's call returns the request it would send."""

    def __init__(self) -> None:
        self.infer = self

    def __getattr__(self, method: str) -> Any:
        return lambda request: (method, request)


def _replayable() -> list[Any]:
    params = []
    for case in CASES:
        if not case.id.startswith(("infer-", "metadata-", "config-")):
            continue
        marks = [pytest.mark.skip(reason=SKIPPED[case.id])] if case.id in SKIPPED else []
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


def _path(name: str, version: str, tail: str = "") -> str:
    path = f"/v2/models/{quote(name, safe='')}"
    if version:
        path += f"/versions/{quote(version, safe='')}"
    return path + tail


def _values(tensor: ipb.ModelInferRequest.InferInputTensor) -> list[Any]:
    for field in ("fp32_contents", "fp64_contents", "int_contents", "int64_contents",
                  "uint_contents", "uint64_contents", "bool_contents"):  # fmt: skip
        values = list(getattr(tensor.contents, field))
        if values:
            return values
    return [value.decode() for value in tensor.contents.bytes_contents]


def replay(url: str, method: str, request: Any) -> Answer:
    """The HTTP form of one recorded gRPC request."""
    tails = {"ModelMetadata": "", "ModelReady": "/ready", "ModelConfig": "/config"}
    if method in tails:
        return call(url, "GET", _path(request.name, request.version, tails[method]))
    assert method == "ModelInfer", method
    raw = list(request.raw_input_contents)
    inputs: list[dict[str, Any]] = []
    for index, tensor in enumerate(request.inputs):
        item: dict[str, Any] = {
            "name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape),
        }  # fmt: skip
        if index < len(raw):
            item["parameters"] = {"binary_data_size": len(raw[index])}
        if tensor.HasField("contents"):
            item["data"] = _values(tensor)
        inputs.append(item)
    header = json.dumps(
        {"inputs": inputs, "outputs": [{"name": output.name} for output in request.outputs]}
    ).encode()
    headers = {"Content-Type": "application/json"}
    if raw:
        headers = {"Content-Type": "application/octet-stream",
                   "Inference-Header-Content-Length": str(len(header))}  # fmt: skip
    path = _path(request.model_name, request.model_version, "/infer")
    return call(url, "POST", path, header + b"".join(raw), headers)


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = RunningServer(
        tmp_path_factory.mktemp("paradigm-small-http"), max_message_bytes=SMALL_MESSAGE_BYTES
    )
    yield running
    running.stop()


@pytest.mark.parametrize("case", _replayable())
def test_bad_request_over_http(
    case: Case, request: pytest.FixtureRequest, server: RunningServer, iris_model: str
) -> None:
    target: RunningServer = request.getfixturevalue("small_server") if case.small else server
    recording: Any = _Recorder()
    method: str
    recorded: Any
    method, recorded = case.call(recording)  # type: ignore[misc]
    answer = replay(target.http_url, method, recorded)
    status, fragment = HTTP_ONLY.get(case.id, (HTTP_STATUS[case.code], case.fragment))
    message = answer.error
    assert answer.status not in (500, 501), message
    assert "Traceback" not in message
    assert answer.status == status, f"{case.id}: {answer.status} {message!r}"
    assert fragment in message, f"{case.id}: {message!r}"


def test_every_grpc_code_of_the_corpus_has_an_http_status() -> None:
    codes = {case.code for case in CASES}
    assert codes <= set(HTTP_STATUS)
    assert HTTP_STATUS[grpc.StatusCode.INVALID_ARGUMENT] == 400
    assert HTTP_STATUS[grpc.StatusCode.NOT_FOUND] == 404
    assert HTTP_STATUS[grpc.StatusCode.RESOURCE_EXHAUSTED] == 429


def test_the_server_still_answers_after_the_replay(server: RunningServer, iris_model: str) -> None:
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 4],
                                   "data": IRIS_ROWS.tolist()}]}).encode()  # fmt: skip
    answer = call(server.http_url, "POST", f"/v2/models/{iris_model}/infer", body)
    assert answer.status == 200
    probabilities = {o["name"]: o for o in answer.json()["outputs"]}["probabilities"]["data"]
    assert np.allclose(np.array(probabilities).reshape(3, 3).sum(axis=1), 1, atol=1e-5)

"""OIP v2 over REST against the real server: tritonclient.http unchanged (binary tensor data
by default, and JSON), BYTES columns of a mixed table, curl, errors as {"error": ...} with
the HTTP status of the gRPC one, the REST requests in the same metrics, and the listener's
own port rules. Auth and TLS over REST are in test_rest_access.py.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http
from prometheus_client import CollectorRegistry
from tritonclient.utils import InferenceServerException

from clients.client import ParadigmClient
from clients.harness import free_port, paradigm_server
from service import cli
from service.api.rest.server import bind_socket
from tests.rest import call, post_binary, post_json
from tests.server import RunningServer

IRIS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], np.float32)
PENGUINS = "penguins-lr"


@pytest.fixture(scope="module")
def http(server: RunningServer, iris_model: str) -> Iterator[triton_http.InferenceServerClient]:
    client = triton_http.InferenceServerClient(server.http_url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_answer(client: ParadigmClient, iris_model: str) -> dict[str, np.ndarray]:
    """iris-lr's answer to IRIS over gRPC, what every REST answer must equal.
    (Our client: tritonclient.grpc's protobufs and ours clash in one process.)"""
    result = client.infer(iris_model, IRIS)
    return {name: result.as_numpy(name) for name in ("label", "probabilities")}


@pytest.fixture(scope="module")
def penguins(client: ParadigmClient) -> str:
    """Logistic regression on the built-in penguins table: BYTES columns in, BYTES out."""
    job = client.start_training("penguins", "logistic_regression", model_name=PENGUINS, seed=0)
    client.wait_for_job(job.id)
    return PENGUINS


def _iris_input(binary: bool) -> triton_http.InferInput:
    tensor = triton_http.InferInput("input", list(IRIS.shape), "FP32")
    tensor.set_data_from_numpy(IRIS, binary_data=binary)
    return tensor


def test_health_and_metadata_through_tritonclient(
    http: triton_http.InferenceServerClient, iris_model: str
) -> None:
    assert http.is_server_live() and http.is_server_ready()
    assert http.is_model_ready(iris_model) and http.is_model_ready(iris_model, "1")
    assert not http.is_model_ready("nope")
    server = http.get_server_metadata()
    assert server["name"] == "paradigm" and "paradigm" in server["extensions"]
    for version in ("", "1"):
        model = http.get_model_metadata(iris_model, version)
        assert model["name"] == iris_model and model["versions"] == ["1"]
        assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
        assert {o["name"] for o in model["outputs"]} == {"label", "probabilities"}
        assert model["parameters"]["device"] == "cpu"


def test_model_config_as_triton_writes_it(
    http: triton_http.InferenceServerClient, iris_model: str
) -> None:
    config = http.get_model_config(iris_model)
    assert config["name"] == iris_model and config["max_batch_size"] == 4096
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}]
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    assert http.get_model_config(iris_model, "1") == config


def test_tritonclient_binary_by_default_equals_grpc(
    http: triton_http.InferenceServerClient, iris_model: str, grpc_answer: dict[str, np.ndarray]
) -> None:
    result = http.infer(iris_model, [_iris_input(True)], request_id="r-1")
    response = result.get_response()
    assert response["id"] == "r-1" and response["model_version"] == "1"
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    for name, expected in grpc_answer.items():
        np.testing.assert_array_equal(result.as_numpy(name), expected)


def test_tritonclient_json_both_ways_equals_grpc(
    http: triton_http.InferenceServerClient, iris_model: str, grpc_answer: dict[str, np.ndarray]
) -> None:
    wanted = [triton_http.InferRequestedOutput("probabilities", binary_data=False)]
    result = http.infer(iris_model, [_iris_input(False)], outputs=wanted, model_version="1")
    [output] = result.get_response()["outputs"]
    assert output["name"] == "probabilities" and "data" in output
    np.testing.assert_allclose(result.as_numpy("probabilities"), grpc_answer["probabilities"])


def test_mixed_binary_and_json_outputs(
    http: triton_http.InferenceServerClient, iris_model: str, grpc_answer: dict[str, np.ndarray]
) -> None:
    wanted = [
        triton_http.InferRequestedOutput("label", binary_data=False),
        triton_http.InferRequestedOutput("probabilities", binary_data=True),
    ]
    result = http.infer(iris_model, [_iris_input(True)], outputs=wanted)
    kinds = {o["name"]: ("data" in o) for o in result.get_response()["outputs"]}
    assert kinds == {"label": True, "probabilities": False}
    for name, expected in grpc_answer.items():
        np.testing.assert_allclose(result.as_numpy(name), expected)


def test_async_tritonclient(server: RunningServer, iris_model: str) -> None:
    import tritonclient.http.aio as triton_aio

    async def run() -> np.ndarray:
        client = triton_aio.InferenceServerClient(server.http_url.removeprefix("http://"))
        try:
            tensor = triton_aio.InferInput("input", list(IRIS.shape), "FP32")
            tensor.set_data_from_numpy(IRIS)
            answers = await asyncio.gather(*(client.infer(iris_model, [tensor]) for _ in range(8)))
            return np.stack([a.as_numpy("probabilities") for a in answers])
        finally:
            await client.close()

    probabilities = asyncio.run(run())
    assert probabilities.shape == (8, 2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=2), 1, atol=1e-5)


def _penguin_rows(metadata: dict[str, Any]) -> dict[str, np.ndarray]:
    words = {"island": ["Biscoe", "Dream"], "sex": ["male", ""]}
    rows: dict[str, np.ndarray] = {}
    for spec in metadata["inputs"]:
        shape = [2, *spec["shape"][1:]]
        if spec["datatype"] == "BYTES":
            values = words.get(spec["name"], ["x", "y"])
            rows[spec["name"]] = np.array(values, dtype=object).reshape(shape)
        else:
            rows[spec["name"]] = np.full(shape, 40.0, np.float32)
    return rows


def test_bytes_columns_in_and_out_binary_and_json(
    http: triton_http.InferenceServerClient, penguins: str
) -> None:
    metadata = http.get_model_metadata(penguins)
    assert "BYTES" in {spec["datatype"] for spec in metadata["inputs"]}
    rows = _penguin_rows(metadata)
    answers = []
    for binary in (True, False):
        tensors = []
        for spec in metadata["inputs"]:
            tensor = triton_http.InferInput(spec["name"], list(rows[spec["name"]].shape),
                                            spec["datatype"])  # fmt: skip
            tensor.set_data_from_numpy(rows[spec["name"]], binary_data=binary)
            tensors.append(tensor)
        wanted = [triton_http.InferRequestedOutput(name, binary_data=binary)
                  for name in ("label", "probabilities")]  # fmt: skip
        result = http.infer(penguins, tensors, outputs=wanted)
        labels = result.as_numpy("label")
        assert labels is not None and labels.shape == (2,)
        # Binary BYTES come back as bytes, JSON ones as str: either way a species.
        names = [v.decode() if isinstance(v, bytes) else v for v in labels.tolist()]
        assert set(names) <= {"Adelie", "Chinstrap", "Gentoo"}
        answers.append((names, result.as_numpy("probabilities")))
    assert answers[0][0] == answers[1][0]
    np.testing.assert_allclose(answers[0][1], answers[1][1])


def test_bytes_input_as_length_prefixed_strings(
    server: RunningServer, penguins: str, http: triton_http.InferenceServerClient
) -> None:
    """A BYTES element that is not UTF-8 is refused at the door, as over gRPC."""
    metadata = http.get_model_metadata(penguins)
    rows = _penguin_rows(metadata)
    inputs, blobs = [], []
    for spec in metadata["inputs"]:
        if spec["datatype"] == "BYTES":
            blob = b"\x02\x00\x00\x00\xff\xfe" * 2
        else:
            blob = rows[spec["name"]].tobytes()
        inputs.append({"name": spec["name"], "datatype": spec["datatype"], "shape": [2, 1],
                       "parameters": {"binary_data_size": len(blob)}})  # fmt: skip
        blobs.append(blob)
    answer = post_binary(server.http_url, f"/v2/models/{penguins}/infer", {"inputs": inputs}, blobs)
    assert answer.status == 400
    assert "is not UTF-8 text" in answer.error


def test_curl(server: RunningServer, iris_model: str, grpc_answer: dict[str, np.ndarray]) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")

    def run(*args: str) -> tuple[int, Any]:
        done = subprocess.run(
            [curl, "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True,
            timeout=60, check=True,
        )  # fmt: skip
        body, _, status = done.stdout.rpartition("\n")
        return int(status), json.loads(body) if body else None

    base = server.http_url
    assert run(f"{base}/v2/health/ready") == (200, {"ready": True})
    status, metadata = run(f"{base}/v2/models/{iris_model}")
    assert status == 200 and metadata["platform"] == "onnxruntime_onnx"
    request = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                           "data": IRIS.tolist()}]}  # fmt: skip
    status, answer = run("-H", "Content-Type: application/json", "-d", json.dumps(request),
                         f"{base}/v2/models/{iris_model}/infer")  # fmt: skip
    assert status == 200
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["label"]["data"] == grpc_answer["label"].tolist()
    assert outputs["probabilities"]["shape"] == [2, 3]
    np.testing.assert_allclose(
        np.array(outputs["probabilities"]["data"]).reshape(2, 3),
        grpc_answer["probabilities"],
        rtol=1e-6,
    )
    status, error = run(f"{base}/v2/models/nope/versions/3")
    assert status == 404 and error == {"error": "model 'nope' not found"}


@pytest.mark.parametrize(
    ("method", "path", "status", "fragment"),
    [
        ("GET", "/v2/nothing", 404, "no endpoint /v2/nothing"),
        ("GET", "/v2/" + "x" * 5000, 404, "x" * 196 + "…; see /v2"),
        ("GET", "/v2/models/iris-lr/infer", 405, "GET is not allowed"),
        ("POST", "/v2/health/live", 405, "POST is not allowed"),
        ("GET", "/v2/models/iris-lr/versions/9", 404, "versions: ['1']"),
        ("GET", "/v2/models/" + "a" * 2000, 400, "model name is 2000 characters long"),
    ],
)
def test_errors_are_json_with_the_status(
    server: RunningServer, iris_model: str, method: str, path: str, status: int, fragment: str
) -> None:
    answer = call(server.http_url, method, path)
    assert answer.status == status and fragment in answer.error, answer


@pytest.mark.parametrize(
    ("body", "headers", "fragment"),
    [
        (b"{not json", {}, "does not parse"),
        (b"[1, 2]", {}, "the request must be a JSON object"),
        (b'{"inputs": 3}', {}, '"inputs": a list of tensors'),
        (
            b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": "x"}]}',
            {},
            '"data" must be a list',
        ),
        (
            b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],'
            b' "data": ["1", "2", "3", "4"]}]}',
            {},
            "not FP32",
        ),
        (
            b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],'
            b' "data": [[1, 2], [3]]}]}',
            {},
            "ragged",
        ),
        (
            b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": "1x4", "data": []}]}',
            {},
            "shape must be a list of whole numbers",
        ),
        (
            b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4]}]}',
            {},
            'neither "data" nor parameters.binary_data_size',
        ),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "x"}, "whole number of bytes"),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "99"}, "the body has 14 bytes"),
        (
            b'{"inputs": []}abc',
            {"Inference-Header-Content-Length": "14"},
            "3 bytes of binary data follow the JSON header",
        ),
        (
            b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],'
            b' "parameters": {"binary_data_size": 16}}]}',
            {"Inference-Header-Content-Length": "all"},
            "runs past the 0 bytes",
        ),
        (b"{}", {"Content-Encoding": "gzip"}, "send the body uncompressed"),
    ],
)
def test_bad_bodies_are_invalid_argument(
    server: RunningServer, iris_model: str, body: bytes, headers: dict[str, str], fragment: str
) -> None:
    if headers.get("Inference-Header-Content-Length") == "all":  # all JSON, no binary part
        headers = {"Inference-Header-Content-Length": str(len(body))}
    answer = call(server.http_url, "POST", f"/v2/models/{iris_model}/infer", body, headers)
    assert answer.status == 400, answer
    assert fragment in answer.error, answer.error


def test_rest_requests_count_in_the_inference_metrics(
    server: RunningServer, iris_model: str
) -> None:
    def ok_requests(registry: CollectorRegistry) -> float:
        labels = {"paradigm": "classical", "model": iris_model, "version": "1",
                  "algorithm": "logistic_regression", "device": "cpu", "code": "OK"}  # fmt: skip
        return registry.get_sample_value("paradigm_inference_requests_total", labels) or 0.0

    before = ok_requests(server.metrics_registry)
    path = f"/v2/models/{iris_model}/infer"
    request = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                           "data": [5.1, 3.5, 1.4, 0.2]}]}  # fmt: skip
    for _ in range(3):
        assert post_json(server.http_url, path, request).status == 200
    assert ok_requests(server.metrics_registry) == before + 3


def test_http_port_off_by_default(tmp_path: Path) -> None:
    from service.settings import Settings

    assert Settings().http_port == -1
    running = RunningServer(tmp_path / "data", http_port=-1)
    try:
        assert running.app.http_port == 0
    finally:
        running.stop()


def test_a_taken_port_fails_unless_every_socket_shares_it() -> None:
    first = bind_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    try:
        with pytest.raises(OSError):
            bind_socket("127.0.0.1", port)
        with pytest.raises(OSError):
            bind_socket("127.0.0.1", port, reuse_port=True)  # the first did not agree to share
    finally:
        first.close()
    shared = [bind_socket("127.0.0.1", 0, reuse_port=True)]
    try:
        port = shared[0].getsockname()[1]
        shared.append(bind_socket("127.0.0.1", port, reuse_port=True))
        assert shared[1].getsockname()[1] == port
    finally:
        for sock in shared:
            sock.close()


def test_the_server_refuses_to_start_on_a_taken_http_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"cannot bind the REST port 127.0.0.1:{port}"):
            RunningServer(tmp_path / "data", http_port=port)


def test_http_port_file(tmp_path: Path) -> None:
    port_file = tmp_path / "http-port"
    running = RunningServer(tmp_path / "data", http_port_file=port_file)
    try:
        assert int(port_file.read_text()) == running.app.http_port > 0
        assert call(running.http_url, "GET", "/v2/health/live").json() == {"live": True}
    finally:
        running.stop()


def test_infer_error_from_tritonclient_carries_the_message(
    http: triton_http.InferenceServerClient, iris_model: str
) -> None:
    tensor = triton_http.InferInput("input", [1, 5], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 5), np.float32))
    with pytest.raises(InferenceServerException) as raised:
        http.infer(iris_model, [tensor])
    assert raised.value.status() == "400"
    assert "model expects [-1, 4]" in raised.value.message()


def test_paradigm_server_serves_rest_from_its_flags(tmp_path: Path) -> None:
    assert cli.parse_args(["--http-port", "0", "--http-port-file", "f"]) == {
        "http_port": 0, "http_port_file": Path("f"),
    }  # fmt: skip
    port, port_file = free_port(), tmp_path / "http.port"
    flags = ["--http-port", str(port), "--http-port-file", str(port_file)]
    with paradigm_server(tmp_path, "rest-cli", tmp_path / "data", metrics=False, args=flags):
        assert int(port_file.read_text()) == port
        answer = call(f"http://127.0.0.1:{port}", "GET", "/v2/health/ready")
        assert answer.json() == {"ready": True}


def test_requests_past_max_concurrent_rpcs_get_429(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One request held in progress (its body not yet sent) fills a bound of one; its
    client hanging up is no internal error."""
    running = RunningServer(tmp_path / "data", max_concurrent_rpcs=1)
    try:
        port = running.app.http_port
        with socket.create_connection(("127.0.0.1", port), timeout=30) as held:
            held.sendall(
                b"POST /v2/models/iris-lr/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
            )
            deadline = 50
            while True:  # the held request reaches the app once its headers are read
                answer = call(running.http_url, "GET", "/v2/health/live")
                if answer.status == 429 or deadline == 0:
                    break
                deadline -= 1
            assert answer.status == 429
            assert "max_concurrent_rpcs" in answer.error
        # The held connection closed: its request is no longer in progress.
        for _ in range(50):
            if call(running.http_url, "GET", "/v2/health/live").status == 200:
                break
        assert call(running.http_url, "GET", "/v2/health/live").status == 200
    finally:
        running.stop()
    assert "request id" not in caplog.text

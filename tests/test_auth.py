"""Bearer-token authentication against a real server: scopes, refusals, every client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from clients.client import ParadigmClient, ParadigmClientError
from service.api.auth import METHOD_SCOPES, load_tokens, required_scope
from service.gen.inference import grpc_predict_v2_pb2 as oip
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from service.gen.paradigm.v1 import paradigm_pb2_grpc as pb_grpc
from tests.server import RunningServer

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ADMIN = "admin-token-0123456789abcdef"
PREDICT = "predict-token-0123456789abcdef"
ENV_PREDICT = "env-predict-token-0123456789"
MODEL = "auth-iris"
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)

TOKENS_FILE = f"""\
# Paradigm tokens: "<scope> <token>"

admin   {ADMIN}
predict {PREDICT}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Tokens from a file and from PARADIGM_AUTH_TOKENS at once; iris trained by admin."""
    tokens_file = tmp_path_factory.mktemp("auth") / "tokens"
    tokens_file.write_text(TOKENS_FILE)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PARADIGM_AUTH_TOKENS", f"predict:{ENV_PREDICT}")
        running = RunningServer(tmp_path_factory.mktemp("auth-data"), auth_tokens_file=tokens_file)
    try:
        with ParadigmClient(running.target, token=ADMIN, timeout=120) as admin:
            admin.wait_until_ready(30)
            job = admin.start_training("iris", "logistic_regression", model_name=MODEL, seed=0)
            admin.wait_for_job(job.id)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def predict(server: RunningServer) -> Iterator[ParadigmClient]:
    with ParadigmClient(server.target, token=PREDICT) as client:
        yield client


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> Iterator[ParadigmClient]:
    with ParadigmClient(server.target, token=ADMIN) as client:
        yield client


@pytest.fixture(scope="module")
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as channel:
        yield channel


def _code(call: object, *args: object, **kwargs: object) -> grpc.StatusCode:
    try:
        call(*args, **kwargs)  # type: ignore[operator]
    except ParadigmClientError as error:
        return error.code
    except grpc.RpcError as error:
        return error.code()  # type: ignore[attr-defined, no-any-return]
    return grpc.StatusCode.OK


def _refusal(call: object, *args: object) -> ParadigmClientError:
    with pytest.raises(ParadigmClientError) as refused:
        call(*args)  # type: ignore[operator]
    return refused.value


# -- refusals ---------------------------------------------------------------------------------


def test_a_call_without_a_token_is_unauthenticated(server: RunningServer) -> None:
    with ParadigmClient(server.target, token="") as anonymous:
        for call, args in [
            (anonymous.infer, (MODEL, ROWS)),
            (anonymous.list_models, ()),
            (anonymous.server_ready, ()),
            (anonymous.start_training, ("iris", "knn")),
        ]:
            refused = _refusal(call, *args)
            assert refused.code == grpc.StatusCode.UNAUTHENTICATED
            assert "authorization: Bearer <token>" in refused.details
        # A server stream is refused the same way.
        with pytest.raises(ParadigmClientError) as watched:
            next(anonymous.watch_job("any"))
        assert watched.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_a_wrong_token_is_unauthenticated_and_not_echoed(server: RunningServer) -> None:
    wrong = "not-a-token-anyone-configured"
    for token in (wrong, ADMIN + "x", ADMIN[:-1]):
        with ParadigmClient(server.target, token=token) as client:
            refused = _refusal(client.infer, MODEL, ROWS)
        assert refused.code == grpc.StatusCode.UNAUTHENTICATED
        assert "not one this server accepts" in refused.details
        assert token not in refused.details


@pytest.mark.parametrize(
    "header",
    ["Basic x", "Bearer", "Bearer ", "Bearer  ", f"Token {ADMIN}", ADMIN, f"Bearer {ADMIN} x"],
)
def test_a_malformed_header_is_unauthenticated(channel: grpc.Channel, header: str) -> None:
    stub = pb_grpc.ModelServiceStub(channel)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ListModels(pb.ListModelsRequest(), metadata=[("authorization", header)], timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    details = refused.value.details()  # type: ignore[attr-defined]
    assert "Bearer <token>" in details and ADMIN not in details


def test_two_authorization_headers_are_refused(channel: grpc.Channel) -> None:
    stub = pb_grpc.ModelServiceStub(channel)
    metadata = [("authorization", f"Bearer {ADMIN}"), ("authorization", f"Bearer {PREDICT}")]
    code = _code(stub.ListModels, pb.ListModelsRequest(), metadata=metadata, timeout=10)
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_the_scheme_is_case_insensitive(channel: grpc.Channel) -> None:
    stub = pb_grpc.ModelServiceStub(channel)
    metadata = [("authorization", f"bearer {PREDICT}")]
    assert _code(stub.ListModels, pb.ListModelsRequest(), metadata=metadata) == grpc.StatusCode.OK


# -- scopes -----------------------------------------------------------------------------------


def test_a_predict_token_runs_models_and_reads(predict: ParadigmClient) -> None:
    assert predict.infer(MODEL, ROWS).as_numpy("label").tolist() == [0, 2]
    assert [i.name for i in predict.model_metadata(MODEL).inputs] == ["input"]
    assert predict.model_ready(MODEL) and predict.server_ready()
    assert MODEL in [m.name for m in predict.list_models()]
    assert predict.get_model(MODEL).name == MODEL
    assert "iris" in [d.name for d in predict.list_datasets()]
    assert predict.list_algorithms()
    jobs = predict.list_jobs()
    assert jobs and predict.get_job(jobs[0].id).id == jobs[0].id
    events = list(predict.watch_job(jobs[0].id))  # a server stream, allowed
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED
    predict.cost_report()


def test_a_predict_token_may_not_change_anything(predict: ParadigmClient, tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", X=ROWS, y=np.array([0, 1]))
    (tmp_path / "m.onnx").write_bytes(b"not really a model")
    for call, args in [
        (predict.start_training, ("iris", "knn")),
        (predict.upload_dataset, ("mine", tmp_path / "d.npz")),  # client stream
        (predict.generate_dataset, ("mine", 100)),
        (predict.delete_dataset, ("iris",)),
        (predict.delete_model, (MODEL,)),
        (predict.import_model, ("mine", tmp_path / "m.onnx")),  # client stream
        (predict.export_model, (MODEL, tmp_path / "out.onnx")),  # server stream
        (predict.cancel_job, ("any",)),
    ]:
        refused = _refusal(call, *args)
        assert refused.code == grpc.StatusCode.PERMISSION_DENIED, call
        assert "needs a token with the 'admin' scope" in refused.details
    assert MODEL in [m.name for m in predict.list_models()]


def test_an_admin_token_may_do_both(admin: ParadigmClient, tmp_path: Path) -> None:
    assert admin.infer(MODEL, ROWS).as_numpy("label").tolist() == [0, 2]
    assert MODEL in [m.name for m in admin.list_models()]
    exported = admin.export_model(MODEL, tmp_path / "m.onnx")
    assert exported.name == MODEL and (tmp_path / "m.onnx").stat().st_size > 0
    # Past authorization: the server's own answer.
    assert _code(admin.delete_model, "no-such-model") == grpc.StatusCode.NOT_FOUND


def test_a_token_from_the_environment_string(server: RunningServer) -> None:
    with ParadigmClient(server.target, token=ENV_PREDICT) as client:
        assert client.infer(MODEL, ROWS).as_numpy("label").tolist() == [0, 2]
        assert _code(client.delete_model, MODEL) == grpc.StatusCode.PERMISSION_DENIED


def test_the_client_reads_paradigm_token(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARADIGM_TOKEN", PREDICT)
    with ParadigmClient(server.target) as client:
        assert client.model_ready(MODEL)
    with ParadigmClient(server.target, token="") as client:  # "" overrides the environment
        assert _code(client.model_ready, MODEL) == grpc.StatusCode.UNAUTHENTICATED


def test_health_needs_no_token(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_needs_a_predict_token(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    def services(metadata: list[tuple[str, str]]) -> list[str]:
        answer = next(iter(stub.ServerReflectionInfo(iter([request]), metadata=metadata)))
        return [s.name for s in answer.list_services_response.service]

    assert "paradigm.v1.ModelService" in services([("authorization", f"Bearer {PREDICT}")])
    assert _code(services, []) == grpc.StatusCode.UNAUTHENTICATED


def test_an_unregistered_method(channel: grpc.Channel) -> None:
    call = channel.unary_unary("/paradigm.v1.Nothing/Here")
    assert _code(call, b"", timeout=10) == grpc.StatusCode.UNAUTHENTICATED
    metadata = [("authorization", f"Bearer {PREDICT}")]
    assert _code(call, b"", metadata=metadata, timeout=10) == grpc.StatusCode.UNIMPLEMENTED


def test_the_scope_table_covers_every_method_and_fails_closed() -> None:
    services = [
        *oip.DESCRIPTOR.services_by_name.values(),
        *pb.DESCRIPTOR.services_by_name.values(),
        *health_pb2.DESCRIPTOR.services_by_name.values(),
        *reflection_pb2.DESCRIPTOR.services_by_name.values(),
    ]
    methods = {f"/{s.full_name}/{m.name}" for s in services for m in s.methods}
    # Health's List arrived in later grpcio versions; it defaults to admin, which is safe.
    methods.discard("/grpc.health.v1.Health/List")
    assert methods - set(METHOD_SCOPES) == set()
    assert required_scope("/paradigm.v1.ModelService/SomethingNew") == "admin"
    assert required_scope("/inference.GRPCInferenceService/ModelInfer") == "predict"
    assert required_scope("/grpc.health.v1.Health/Check") is None


# -- other clients ----------------------------------------------------------------------------

TRITON = """
import json, sys
import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

url, model, token = sys.argv[1:4]
client = triton.InferenceServerClient(url=url)
tensor = triton.InferInput("input", [2, 4], "FP32")
tensor.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], "float32"))
result = client.infer(model, [tensor], headers={"authorization": "Bearer " + token})
try:
    client.infer(model, [tensor])
    refused = "no error"
except InferenceServerException as error:
    refused = str(error.status())
print(json.dumps({"labels": result.as_numpy("label").tolist(), "refused": refused}))
"""


def test_tritonclient_sends_the_token_as_a_header(server: RunningServer) -> None:
    # In a subprocess: tritonclient's protobufs and ours clash in one process.
    completed = subprocess.run(
        [sys.executable, "-c", TRITON, server.target, MODEL, PREDICT],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    answer = json.loads(completed.stdout)
    assert answer == {"labels": [0, 2], "refused": "StatusCode.UNAUTHENTICATED"}


def _paradigm(
    server: RunningServer, *args: str, env_token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PARADIGM_TOKEN"}
    if env_token is not None:
        env["PARADIGM_TOKEN"] = env_token
    return subprocess.run(
        [str(BIN / "paradigm"), "--target", server.target, *args],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip


def test_the_cli_sends_a_token(server: RunningServer, tmp_path: Path) -> None:
    listed = _paradigm(server, "--token", PREDICT, "models")
    assert listed.returncode == 0, listed.stderr
    assert MODEL in listed.stdout
    rows = tmp_path / "rows.csv"
    rows.write_text("5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
    predicted = _paradigm(server, "predict", MODEL, str(rows), env_token=PREDICT)
    assert predicted.returncode == 0, predicted.stderr
    refused = _paradigm(server, "--token", PREDICT, "models", "delete", MODEL)
    assert refused.returncode == 1 and refused.stderr.startswith("error: PERMISSION_DENIED:")
    anonymous = _paradigm(server, "models")
    assert anonymous.returncode == 1 and anonymous.stderr.startswith("error: UNAUTHENTICATED:")
    assert "Traceback" not in anonymous.stderr + refused.stderr


# -- configuration ----------------------------------------------------------------------------


def test_tokens_load_from_a_file_and_a_string(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(TOKENS_FILE)
    assert load_tokens(path) == {ADMIN: "admin", PREDICT: "predict"}
    assert load_tokens(None, f" admin:{ADMIN} , predict:{PREDICT},") == {
        ADMIN: "admin",
        PREDICT: "predict",
    }
    assert load_tokens(path, f"predict:{ENV_PREDICT}")[ENV_PREDICT] == "predict"
    assert load_tokens(None, "") == {} and load_tokens(None, "  ") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"admin {ADMIN}\nsuperuser {PREDICT}\n", "line 2: unknown scope"),
        (f"{PREDICT} admin\n", "line 1: unknown scope"),
        (f"admin {ADMIN} extra\n", "line 1: expected '<scope> <token>'"),
        ("admin\n", "line 1: expected '<scope> <token>'"),
        ("# only a comment\n\n", "holds no tokens"),
        (f"admin {ADMIN}\npredict {ADMIN}\n", "line 2: the same token is also given at"),
        ("admin tökén\n", "printable ASCII"),
    ],
)
def test_a_bad_tokens_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as refused:
        load_tokens(path)
    assert ADMIN not in str(refused.value) and PREDICT not in str(refused.value)


@pytest.mark.parametrize(
    ("inline", "message"),
    [
        (ADMIN, "entry 1: expected 'scope:token'"),
        (f"admin:{ADMIN},root:{PREDICT}", "entry 2: unknown scope"),
        ("admin:", "entry 1: a token must be"),
        (",", "holds no tokens"),
    ],
)
def test_a_bad_tokens_string_is_refused(inline: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        load_tokens(None, inline)
    assert ADMIN not in str(refused.value) and PREDICT not in str(refused.value)


def test_a_missing_tokens_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the auth tokens file"):
        load_tokens(tmp_path / "absent")


def test_the_server_refuses_to_start_with_a_bad_tokens_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"admin {ADMIN}\nadmn {PREDICT}\n")
    with pytest.raises(ValueError, match="line 2: unknown scope"):
        RunningServer(tmp_path / "data", auth_tokens_file=path)
    # The command says why and exits 1, without a traceback.
    started = subprocess.run(
        [str(BIN / "paradigm-server"), "--data-dir", str(tmp_path / "data"), "--port", "0",
         "--metrics-port", "-1", "--auth-tokens-file", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert started.returncode == 1
    assert "could not start" in started.stderr and "line 2: unknown scope" in started.stderr
    assert "Traceback" not in started.stderr and PREDICT not in started.stderr

"""Bearer tokens and TLS over REST: the same tokens, scopes and PEM files as gRPC."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from clients.client import ParadigmClient
from service.api.auth import MISSING_TOKEN, UNKNOWN_TOKEN
from tests.certs import CertificateAuthority
from tests.rest import call, post_json
from tests.server import RunningServer

ADMIN = "rest-admin-token-0123456789"
PREDICT = "rest-predict-token-0123456789"
MODEL = "rest-auth-iris"
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
REQUEST = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                       "data": ROWS.reshape(-1).tolist()}]}  # fmt: skip


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("rest-certs"))


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, ca: CertificateAuthority
) -> Iterator[RunningServer]:
    """TLS and tokens at once, as a production server would run; iris trained by admin."""
    issued = ca.server()
    running = RunningServer(
        tmp_path_factory.mktemp("rest-auth-data"),
        auth_tokens=f"admin:{ADMIN},predict:{PREDICT}",
        tls_cert_file=issued.cert_file,
        tls_key_file=issued.key_file,
    )
    try:
        with ParadigmClient(
            running.target, token=ADMIN, timeout=120, root_certificates=ca.cert
        ) as admin:
            admin.wait_until_ready(30)
            job = admin.start_training("iris", "logistic_regression", model_name=MODEL, seed=0)
            admin.wait_for_job(job.id)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def trusting(ca: CertificateAuthority) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca.cert_file)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_health_needs_no_token(server: RunningServer, trusting: ssl.SSLContext) -> None:
    assert server.http_url.startswith("https://")
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert call(server.http_url, "GET", path, context=trusting).status == 200


@pytest.mark.parametrize(
    "path", ["/v2", f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/ready", "/v2/models/nope"]
)
def test_without_a_token_is_401(server: RunningServer, trusting: ssl.SSLContext, path: str) -> None:
    answer = call(server.http_url, "GET", path, context=trusting)
    assert answer.status == 401
    assert answer.error == MISSING_TOKEN.replace("metadata", "header")
    assert answer.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("Bearer not-a-known-token", UNKNOWN_TOKEN),
        ("Basic dXNlcjpwYXNz", "malformed authorization"),
        ("Bearer", "malformed authorization"),
    ],
)
def test_bad_tokens_are_401_and_not_echoed(
    server: RunningServer, trusting: ssl.SSLContext, header: str, fragment: str
) -> None:
    answer = post_json(
        server.http_url, f"/v2/models/{MODEL}/infer", REQUEST,
        context=trusting, extra_headers={"Authorization": header},
    )  # fmt: skip
    assert answer.status == 401
    assert fragment in answer.error and "not-a-known-token" not in answer.error


@pytest.mark.parametrize("token", [PREDICT, ADMIN])
def test_predict_and_admin_tokens_infer(
    server: RunningServer, trusting: ssl.SSLContext, token: str
) -> None:
    answer = post_json(server.http_url, f"/v2/models/{MODEL}/infer", REQUEST,
                       context=trusting, extra_headers=_bearer(token))  # fmt: skip
    assert answer.status == 200, answer
    labels = {o["name"]: o["data"] for o in answer.json()["outputs"]}["label"]
    assert labels == [0, 2]


def test_tritonclient_over_https_with_a_token(
    server: RunningServer, ca: CertificateAuthority
) -> None:
    client = triton_http.InferenceServerClient(
        server.http_url.removeprefix("https://"), ssl=True,
        ssl_options={"ca_certs": str(ca.cert_file)},
    )  # fmt: skip
    try:
        tensor = triton_http.InferInput("input", list(ROWS.shape), "FP32")
        tensor.set_data_from_numpy(ROWS)
        result = client.infer(MODEL, [tensor], headers=_bearer(PREDICT))
        assert result.as_numpy("label").tolist() == [0, 2]
        with pytest.raises(InferenceServerException) as refused:
            client.infer(MODEL, [tensor])
        assert refused.value.status() == "401"
    finally:
        client.close()


def test_curl_over_https(server: RunningServer, ca: CertificateAuthority) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    done = subprocess.run(
        [curl, "-sS", "--cacert", str(ca.cert_file), "-H", f"Authorization: Bearer {PREDICT}",
         "-d", json.dumps(REQUEST), f"{server.http_url}/v2/models/{MODEL}/infer"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout)["model_name"] == MODEL


def test_plain_http_and_untrusted_certificates_fail(
    server: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    plain = server.http_url.replace("https://", "http://")
    with pytest.raises((ConnectionError, OSError)):
        answer = call(plain, "GET", "/v2/health/live", timeout=10)
        # Some stacks answer a plain request on a TLS port with a 400 page instead.
        assert answer.status != 200
        raise ConnectionError("answered in clear text")
    stranger = CertificateAuthority(tmp_path_factory.mktemp("stranger"), "stranger-ca")
    with pytest.raises(ssl.SSLError):
        call(server.http_url, "GET", "/v2/health/live",
             context=ssl.create_default_context(cafile=stranger.cert_file))  # fmt: skip


def test_mutual_tls_needs_a_client_certificate(
    tmp_path_factory: pytest.TempPathFactory, ca: CertificateAuthority
) -> None:
    issued = ca.server("rest-mtls-server")
    running = RunningServer(
        tmp_path_factory.mktemp("rest-mtls-data"),
        tls_cert_file=issued.cert_file,
        tls_key_file=issued.key_file,
        tls_client_ca_file=ca.cert_file,
    )
    try:
        anonymous = ssl.create_default_context(cafile=ca.cert_file)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            call(running.http_url, "GET", "/v2/health/live", context=anonymous, timeout=10)
        client = ca.client("rest-client")
        known = ssl.create_default_context(cafile=ca.cert_file)
        known.load_cert_chain(client.cert_file, client.key_file)
        assert call(running.http_url, "GET", "/v2/health/live", context=known).status == 200
    finally:
        running.stop()

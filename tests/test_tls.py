"""TLS and mutual TLS against real servers, with certificates made for the test."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from clients.client import ParadigmClient, ParadigmClientError
from service.api.auth import server_credentials
from tests.certs import CertificateAuthority
from tests.server import RunningServer

CLI = str(Path(sys.executable).parent / "paradigm")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, ca: CertificateAuthority
) -> Iterator[RunningServer]:
    issued = ca.server()
    running = RunningServer(
        tmp_path_factory.mktemp("tls-data"),
        tls_cert_file=issued.cert_file,
        tls_key_file=issued.key_file,
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def mtls_server(
    tmp_path_factory: pytest.TempPathFactory, ca: CertificateAuthority
) -> Iterator[RunningServer]:
    issued = ca.server("mtls-server")
    running = RunningServer(
        tmp_path_factory.mktemp("mtls-data"),
        tls_cert_file=issued.cert_file,
        tls_key_file=issued.key_file,
        tls_client_ca_file=ca.cert_file,
    )
    yield running
    running.stop()


def _fails_to_connect(client: ParadigmClient) -> None:
    with client, pytest.raises(ParadigmClientError) as failed:
        client.list_datasets()
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE


def test_a_client_trusting_the_ca_talks_tls(
    tls_server: RunningServer, ca: CertificateAuthority
) -> None:
    with ParadigmClient(tls_server.target, root_certificates=ca.cert, token="") as client:
        client.wait_until_ready(30)
        assert "iris" in [d.name for d in client.list_datasets()]


def test_a_plaintext_client_cannot_talk_to_a_tls_server(tls_server: RunningServer) -> None:
    _fails_to_connect(ParadigmClient(tls_server.target, timeout=10, token=""))


def test_a_client_not_trusting_the_ca_is_refused(tls_server: RunningServer, tmp_path: Path) -> None:
    stranger = CertificateAuthority(tmp_path, "another-ca")
    _fails_to_connect(
        ParadigmClient(tls_server.target, timeout=10, root_certificates=stranger.cert, token="")
    )


def test_mutual_tls_needs_a_client_certificate(
    mtls_server: RunningServer, ca: CertificateAuthority
) -> None:
    _fails_to_connect(
        ParadigmClient(mtls_server.target, timeout=10, root_certificates=ca.cert, token="")
    )


def test_mutual_tls_refuses_a_certificate_from_another_ca(
    mtls_server: RunningServer, ca: CertificateAuthority, tmp_path: Path
) -> None:
    rogue = CertificateAuthority(tmp_path, "rogue-ca").client("rogue")
    _fails_to_connect(
        ParadigmClient(
            mtls_server.target,
            timeout=10,
            root_certificates=ca.cert,
            private_key=rogue.key,
            certificate_chain=rogue.cert,
            token="",
        )
    )


def test_mutual_tls_with_a_client_certificate(
    mtls_server: RunningServer, ca: CertificateAuthority
) -> None:
    issued = ca.client()
    with ParadigmClient(
        mtls_server.target,
        root_certificates=ca.cert,
        private_key=issued.key,
        certificate_chain=issued.cert,
        token="",
    ) as client:
        client.wait_until_ready(30)
        assert client.server_metadata().name


def test_the_cli_speaks_mutual_tls(mtls_server: RunningServer, ca: CertificateAuthority) -> None:
    issued = ca.client("cli-client")
    base = [CLI, "--target", mtls_server.target, "--timeout", "10", "--tls-ca", str(ca.cert_file)]
    with_cert = [*base, "--tls-cert", str(issued.cert_file), "--tls-key", str(issued.key_file)]
    listed = subprocess.run(
        [*with_cert, "datasets"], capture_output=True, text=True, timeout=60, check=False
    )
    assert listed.returncode == 0, listed.stderr
    assert "iris" in listed.stdout
    refused = subprocess.run(
        [*base, "datasets"], capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode == 1 and "UNAVAILABLE" in refused.stderr


def test_inconsistent_tls_settings_are_refused(ca: CertificateAuthority, tmp_path: Path) -> None:
    issued = ca.server("lonely")
    with pytest.raises(ValueError, match="go together"):
        server_credentials(issued.cert_file, None, None)
    with pytest.raises(ValueError, match="go together"):
        server_credentials(None, issued.key_file, None)
    with pytest.raises(ValueError, match="needs the server's own certificate"):
        server_credentials(None, None, ca.cert_file)
    with pytest.raises(ValueError, match="cannot read the TLS private key"):
        server_credentials(issued.cert_file, tmp_path / "missing.key", None)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    with pytest.raises(ValueError, match="not PEM"):
        server_credentials(not_pem, issued.key_file, None)
    assert server_credentials(None, None, None) is None
    assert server_credentials(issued.cert_file, issued.key_file, ca.cert_file) is not None

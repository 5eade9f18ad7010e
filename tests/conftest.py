from __future__ import annotations

import os

# Before numpy loads (the imports below load it): BLAS in this test process must not fight
# the server's worker processes for 2 cores; set later, the variables do nothing.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from clients.client import ParadigmClient
from tests.postgres import NOT_INSTALLED, PostgresCluster, bin_dir
from tests.server import RunningServer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _cuda_available() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = RunningServer(tmp_path_factory.mktemp("paradigm-data"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield channel


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(scope="session")
def client(server: RunningServer) -> Iterator[ParadigmClient]:
    with ParadigmClient(server.target, timeout=120) as client:
        client.wait_until_ready(30)
        yield client


@pytest.fixture(scope="session")
def iris_model(client: ParadigmClient) -> str:
    """A logistic regression on iris, published as "iris-lr"; returns its name."""
    job = client.start_training("iris", "logistic_regression", model_name="iris-lr", seed=0)
    client.wait_for_job(job.id)
    return "iris-lr"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster (tests/postgres.py) for the whole session."""
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[postgres]'")
    binaries = bin_dir()
    if binaries is None:
        pytest.skip(NOT_INSTALLED)
    cluster = PostgresCluster(binaries).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres: PostgresCluster) -> str:
    """The URL of a fresh database in the session's PostgreSQL cluster."""
    return postgres.create_database()

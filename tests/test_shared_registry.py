"""A registry shared by replicas, with real parts: a throwaway PostgreSQL (tests/postgres.py),
moto's S3 server on loopback, and `paradigm-server` processes.

(a) The MetadataStore contract on SQLite and PostgreSQL, concurrent reservations included.
(b) S3Artifacts: publish, fetch on another registry with its own cache (checksum checked),
    delete, and clear errors for a missing bucket or an endpoint that does not answer.
(c) Registries sharing one store see each other's changes exactly once (refresh).
(d) Two server processes sharing PostgreSQL and a directory (and S3): a model trained on
    one serves on the other with the same outputs, a delete reaches the other, and both
    publishing one name at once get distinct versions, both served by both.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from clients.client import ParadigmClient, ParadigmClientError
from service.errors import FailedPrecondition, NotFound, Unavailable
from service.registry.artifacts import LocalArtifacts, S3Artifacts
from service.registry.manifest import MODEL_FILE, Manifest, TensorSpec
from service.registry.metadata import MetadataStore, PostgresMetadata, SqliteMetadata
from service.registry.store import Change, ModelRegistry, open_registry
from service.settings import Settings
from tests.postgres import PostgresCluster, free_port
from tests.server import RunningServer

SERVER = Path(sys.executable).parent / "paradigm-server"
ROWS = np.random.default_rng(3).uniform(0, 8, (12, 4)).astype(np.float32)  # iris-shaped
POLL = "0.3"  # seconds between a replica's polls, in these tests
WAIT = 30.0


def manifest(name: str, version: str, **fields: Any) -> Manifest:
    return Manifest(
        name=name,
        version=version,
        paradigm="classical",
        algorithm="logistic_regression",
        task="classification",
        inputs=[TensorSpec("input", "FP32", (-1, 4))],
        outputs=[TensorSpec("label", "INT64", (-1,))],
        **fields,
    )


def wait_until(condition: Callable[[], Any], timeout: float = WAIT, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


# ------------------------------------------------------------- (a) the metadata contract


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], MetadataStore]]:
    """Opens stores on one fresh database (each call another connection)."""
    opened: list[MetadataStore] = []
    if request.param == "sqlite":
        path = tmp_path / "registry.sqlite3"

        def make() -> MetadataStore:
            opened.append(SqliteMetadata(path))
            return opened[-1]
    else:
        url = request.getfixturevalue("postgres").create_database("contract")

        def make() -> MetadataStore:
            opened.append(PostgresMetadata(url))
            return opened[-1]

    yield make
    for store in opened:
        store.close()


def test_metadata_contract(open_store: Callable[[], MetadataStore]) -> None:
    store = open_store()
    assert store.keys() == set() and store.manifests() == [] and store.get("a") is None
    assert store.next_version("a") == 1
    assert [store.reserve_version("a"), store.reserve_version("a")] == [1, 2]
    assert store.reserve_version("b") == 1
    assert store.next_version("a") == 3  # reserved numbers are never handed out again

    marker = store.generation()
    store.insert(manifest("a", "1", metrics={"accuracy": 0.9}))
    store.insert(manifest("a", "2"))
    store.insert(manifest("b", "1"))
    assert store.generation() != marker
    assert store.get("a", "1") == manifest("a", "1", metrics={"accuracy": 0.9})
    assert store.get("a") == manifest("a", "2")  # the latest
    assert store.get("a", "7") is None
    assert store.versions("a") == ["1", "2"]
    assert [(m.name, m.version) for m in store.manifests()] == [("a", "1"), ("a", "2"), ("b", "1")]
    assert [m.version for m in store.manifests("a")] == ["1", "2"]
    assert store.keys() == {("a", "1"), ("a", "2"), ("b", "1")}

    marker = store.generation()
    store.delete("a", ["1", "2"])
    assert store.generation() != marker
    assert store.versions("a") == [] and store.get("a") is None
    assert store.keys() == {("b", "1")}
    assert store.reserve_version("a") == 3  # deleting frees no number

    # An insert takes its number even without a reservation (the single-server path).
    store.insert(manifest("c", "5"))
    assert store.next_version("c") == 6
    store.raise_next_version("c", 4)  # never lowers
    assert store.next_version("c") == 6
    store.raise_next_version("c", 9)
    assert store.next_version("c") == 9

    # Another connection sees all of it.
    other = open_store()
    assert other.keys() == store.keys() and other.generation() == store.generation()


def test_concurrent_reservations_are_distinct(open_store: Callable[[], MetadataStore]) -> None:
    stores = [open_store(), open_store()]
    got: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def reserve(store: MetadataStore) -> None:
        start.wait()
        mine = [store.reserve_version("race") for _ in range(15)]
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=reserve, args=(stores[i % 2],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(got) == list(range(1, 91))


def test_unreachable_postgres_is_unavailable() -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql://paradigm:secret@127.0.0.1:{free_port()}/registry"
    with pytest.raises(Unavailable) as error:
        PostgresMetadata(url)
    assert "unreachable" in error.value.message
    assert "secret" not in error.value.message  # the password stays out of logs and replies


def test_postgres_reconnects_after_the_connection_drops(postgres: PostgresCluster) -> None:
    import psycopg

    store = PostgresMetadata(postgres.create_database("reconnect"))
    try:
        store.insert(manifest("a", str(store.reserve_version("a"))))
        with psycopg.connect(postgres.url(), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'paradigm' AND pid <> pg_backend_pid()"
            )
        assert store.versions("a") == ["1"]  # one broken connection is replaced
    finally:
        store.close()


def test_unsupported_urls_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="registry_url mysql://"):
        open_registry(Settings(registry_url="mysql://x/y"), tmp_path / "a")
    with pytest.raises(FailedPrecondition, match="artifacts_url gs://"):
        open_registry(Settings(artifacts_url="gs://bucket"), tmp_path / "b")


def test_default_registry_imports_neither_client(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from service.settings import Settings; "
        "from service.registry.store import open_registry; "
        f"r = open_registry(Settings(), Path({str(tmp_path)!r})); "
        "assert not r.shared; r.close(); "
        "assert 'psycopg' not in sys.modules and 'boto3' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert (tmp_path / "registry.sqlite3").exists() and (tmp_path / "models").is_dir()


# -------------------------------------------------------------------- (b) S3 artifacts

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 API on loopback, with dummy credentials in this process's environment."""
    pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in S3_ENV.items():
            patch.setenv(key, value)
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    import boto3

    name = f"models-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


def stage(registry: ModelRegistry, payload: bytes) -> Path:
    staging = registry.new_staging_dir("test")
    (staging / MODEL_FILE).write_bytes(payload)
    manifest("pending", "0").write(staging)
    return staging


def test_s3_publish_fetch_delete(tmp_path: Path, s3_endpoint: str, bucket: str) -> None:
    import boto3

    url = f"s3://{bucket}/team/models"
    index = tmp_path / "index.sqlite3"  # one index for both: only the files go through S3

    def registry(data: str) -> ModelRegistry:
        return ModelRegistry(
            tmp_path / data,
            SqliteMetadata(index),
            S3Artifacts(url, s3_endpoint, tmp_path / data / "artifact-cache"),
        )

    a, b = registry("a"), registry("b")
    payload = os.urandom(300_000)
    published = a.publish("s3-model", stage(a, payload), job_id="job-1")
    assert published.version == "1"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {"team/models/s3-model/1/model.onnx", "team/models/s3-model/1/manifest.json"}

    path = b.model_path(b.get("s3-model"))  # downloaded into b's own cache
    assert path.is_relative_to(tmp_path / "b" / "artifact-cache")
    assert path.read_bytes() == payload
    assert b.model_path(b.get("s3-model")) == path  # cached: no second download

    # A file changed behind the registry's back is refused, and nothing is cached.
    s3.put_object(Bucket=bucket, Key="team/models/s3-model/1/model.onnx", Body=b"tampered")
    fresh = S3Artifacts(url, s3_endpoint, tmp_path / "c-cache")
    with pytest.raises(FailedPrecondition, match="does not match its manifest"):
        fresh.local_path(published)
    assert not list((tmp_path / "c-cache").rglob("*.onnx"))

    assert a.delete("s3-model") == ["1"]
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    with pytest.raises(NotFound, match="missing from"):
        fresh.local_path(published)
    a.close()
    b.close()


def test_s3_missing_bucket_and_dead_endpoint_fail_clearly(tmp_path: Path, s3_endpoint: str) -> None:
    with pytest.raises(FailedPrecondition, match="bucket 'no-such-bucket' does not exist"):
        S3Artifacts("s3://no-such-bucket/x", s3_endpoint, tmp_path)
    started = time.monotonic()
    with pytest.raises(Unavailable, match="unreachable"):
        S3Artifacts("s3://models", f"http://127.0.0.1:{free_port()}", tmp_path)
    assert time.monotonic() - started < 20
    with pytest.raises(FailedPrecondition, match="does not exist"):
        open_registry(
            Settings(artifacts_url="s3://no-such-bucket", s3_endpoint_url=s3_endpoint),
            tmp_path / "data",
        )


# ---------------------------------------------------------- (c) registries that share


@pytest.fixture
def shared_pair(tmp_path: Path, postgres: PostgresCluster) -> Iterator[tuple[ModelRegistry, ...]]:
    """Two registries on one PostgreSQL database and one shared directory."""
    url, shared = postgres.create_database("pair"), tmp_path / "shared"
    pair = tuple(
        ModelRegistry(tmp_path / data, PostgresMetadata(url), LocalArtifacts(shared))
        for data in ("a", "b")
    )
    yield pair
    for registry in pair:
        registry.close()


def test_refresh_reports_each_change_once(shared_pair: tuple[ModelRegistry, ...]) -> None:
    a, b = shared_pair
    assert a.shared and b.refresh() == []
    heard: list[tuple[str, str, list[str]]] = []
    b.on_change(lambda *event: heard.append(event))

    a.publish("m", stage(a, b"one"))
    a.publish("m", stage(a, b"two"))
    assert a.refresh() == []  # its own publishes were announced when they happened
    changes = b.refresh()
    assert changes == [Change("published", "m", ["1", "2"])]
    b.announce(changes)
    assert heard == [("published", "m", ["1", "2"])]
    assert b.refresh() == []  # nothing moved since

    b.delete("m", "1")  # announced by b itself, not again by refresh
    assert b.refresh() == []
    assert a.refresh() == [Change("deleted", "m", ["1"])]
    assert a.model_path(a.get("m")).read_bytes() == b"two"


def test_a_version_read_directly_is_reported_deleted(
    shared_pair: tuple[ModelRegistry, ...],
) -> None:
    """Published and deleted between two polls of b, but read by b in between (a request
    loaded it): b must still hear of the deletion, or it would serve it on."""
    a, b = shared_pair
    a.publish("brief", stage(a, b"short-lived"))
    assert b.get("brief").version == "1"  # straight from the shared store
    a.delete("brief")
    assert b.refresh() == [Change("deleted", "brief", ["1"])]
    assert b.refresh() == []


def test_shared_publishes_of_one_name_get_distinct_versions(
    shared_pair: tuple[ModelRegistry, ...],
) -> None:
    start = threading.Barrier(2)
    got: list[str] = []

    def publish(registry: ModelRegistry) -> None:
        start.wait()
        for _ in range(5):
            got.append(registry.publish("race", stage(registry, os.urandom(64))).version)

    threads = [threading.Thread(target=publish, args=(r,)) for r in shared_pair]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(got, key=int) == [str(v) for v in range(1, 11)]
    a, _ = shared_pair
    assert a.versions("race") == sorted(got, key=int)
    for version in got:  # every row has its files
        assert a.model_path(a.get("race", version)).exists()


# ----------------------------------------------------------- (d) two server processes


class ServerProcess:
    """`paradigm-server` on port 0 with its own data directory, as a subprocess."""

    def __init__(self, data: Path, args: list[str], env: dict[str, str]) -> None:
        port_file = data.parent / f"port-{uuid.uuid4().hex[:8]}"
        command = [
            str(SERVER), "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
            "--metrics-port", "-1", "--data-dir", str(data), *args,
        ]  # fmt: skip
        self.output: list[str] = []
        self.process = subprocess.Popen(
            command,
            env={**os.environ, "PARADIGM_REGISTRY_POLL_SECONDS": POLL, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port_file = port_file
        self._client: ParadigmClient | None = None

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    @property
    def client(self) -> ParadigmClient:
        if self._client is None:
            wait_until(lambda: self.port_file.exists() or self.process.poll() is not None, 90)
            assert self.process.poll() is None, "".join(self.output)
            self._client = ParadigmClient(f"127.0.0.1:{self.port_file.read_text()}", timeout=60)
            self._client.wait_until_ready(30)
        return self._client

    def exit_code(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.exit_code()


@pytest.fixture
def start_servers(tmp_path: Path) -> Iterator[Callable[..., list[ServerProcess]]]:
    started: list[ServerProcess] = []

    def start(
        count: int, args: list[str], env: dict[str, str] | None = None
    ) -> list[ServerProcess]:
        servers = [
            ServerProcess(tmp_path / f"data-{len(started) + i}", args, env or {})
            for i in range(count)
        ]
        started.extend(servers)
        for server in servers:
            server.client  # noqa: B018  # waits until it serves
        return servers

    yield start
    for server in started:
        server.stop()
        # Shown by pytest only when the test failed.
        print(f"--- {server.port_file.parent.name} output:\n{''.join(server.output)}")


def infer_or_none(client: ParadigmClient, name: str, version: str = "") -> Any:
    try:
        return client.infer(name, ROWS, version=version).outputs
    except ParadigmClientError as error:
        if error.code == grpc.StatusCode.NOT_FOUND:
            return None
        raise


def assert_same(outputs: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert outputs.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(outputs[name], value)


def train(client: ParadigmClient, name: str, seed: int = 0) -> str:
    job = client.start_training("iris", "logistic_regression", model_name=name, seed=seed)
    return client.wait_for_job(job.id).model_version


def test_two_servers_share_postgres_and_a_directory(
    tmp_path: Path,
    postgres: PostgresCluster,
    start_servers: Callable[..., list[ServerProcess]],
) -> None:
    shared = tmp_path / "shared-models"
    args = ["--registry-url", postgres.create_database("servers"), "--artifacts-url", str(shared)]
    a, b = start_servers(2, args)

    # Trained on A, served by B with the same outputs.
    assert train(a.client, "shared-iris") == "1"
    expected = a.client.infer("shared-iris", ROWS).outputs
    served = wait_until(lambda: infer_or_none(b.client, "shared-iris"), what="B serves it")
    assert_same(served, expected)
    assert (shared / "shared-iris" / "1" / MODEL_FILE).exists()
    assert not (b.port_file.parent / "data-1" / "models" / "shared-iris").exists()

    # Deleted on A: B, which has it loaded, answers NOT_FOUND after its next poll.
    assert a.client.delete_model("shared-iris") == ["1"]
    wait_until(lambda: infer_or_none(b.client, "shared-iris") is None, what="B forgets it")
    assert not (shared / "shared-iris" / "1").exists()

    # Both publish one name at once: two versions, each served by both servers.
    results: dict[str, str] = {}
    threads = [
        threading.Thread(target=lambda s=s, k=k: results.update({k: train(s.client, "both", 1)}))
        for k, s in (("a", a), ("b", b))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(results.values()) == ["1", "2"], results
    for server in (a, b):
        for version in ("1", "2"):
            outputs = wait_until(functools.partial(infer_or_none, server.client, "both", version))
            assert outputs["label"].shape == (len(ROWS),)
    assert sorted(m.version for m in b.client.list_models("both")) == ["1", "2"]


def test_two_servers_share_postgres_and_s3(
    postgres: PostgresCluster,
    s3_endpoint: str,
    bucket: str,
    start_servers: Callable[..., list[ServerProcess]],
) -> None:
    args = [
        "--registry-url", postgres.create_database("s3servers"),
        "--artifacts-url", f"s3://{bucket}/prod",
    ]  # fmt: skip
    env = {**S3_ENV, "PARADIGM_S3_ENDPOINT_URL": s3_endpoint}
    a, b = start_servers(2, args, env)
    assert train(a.client, "s3-iris") == "1"
    expected = a.client.infer("s3-iris", ROWS).outputs
    served = wait_until(lambda: infer_or_none(b.client, "s3-iris"), what="B serves it")
    assert_same(served, expected)
    exported = b.port_file.parent / "exported.onnx"
    b.client.export_model("s3-iris", exported)  # the export path downloads off the loop too
    assert exported.stat().st_size > 0

    assert a.client.delete_model("s3-iris") == ["1"]
    wait_until(lambda: infer_or_none(b.client, "s3-iris") is None, what="B forgets it")


def test_a_replica_keeps_serving_while_its_database_is_down(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    cluster = PostgresCluster(postgres.binaries).start()  # its own: this test stops it
    try:
        server = RunningServer(
            tmp_path / "data",
            registry_url=cluster.create_database("outage"),
            artifacts_url=str(tmp_path / "shared"),
            registry_poll_seconds=0.2,
            metrics_port=-1,
        )
        try:

            def polls(outcome: str) -> float:
                labels = {"outcome": outcome}
                value = server.metrics_registry.get_sample_value(
                    "paradigm_registry_polls_total", labels
                )
                return value or 0.0

            wait_until(lambda: polls("ok") > 0, what="a first poll")
            cluster.stop_server()
            wait_until(lambda: polls("failed") >= 2, what="failed polls")
            with ParadigmClient(server.target, timeout=10) as client:
                assert client.server_ready()  # the server lives on
                with pytest.raises(ParadigmClientError) as error:
                    client.list_models()
                assert error.value.code == grpc.StatusCode.UNAVAILABLE
                assert "unreachable" in error.value.details
            cluster.start_server()
            ok = polls("ok")
            wait_until(lambda: polls("ok") > ok, what="polls after the restart")
            with ParadigmClient(server.target, timeout=10) as client:
                assert client.list_models() == []
        finally:
            server.stop()
    finally:
        cluster.stop()


def test_server_without_its_postgres_fails_to_start_with_one_line(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql://paradigm:secret@127.0.0.1:{free_port()}/registry"
    server = ServerProcess(tmp_path / "lonely", ["--registry-url", url], {})
    assert server.exit_code() == 1, "".join(server.output)
    [line] = [line for line in server.output if "could not start" in line]
    assert "model metadata store postgresql://paradigm@127.0.0.1" in line
    assert "unreachable" in line and "secret" not in line

"""Faults, with real processes: a server SIGKILLed while it trains and while it publishes,
training workers killed, raising or over their time limit, a full disk and a read-only
data directory. After each: no half-written model is visible, the registry's index agrees
with its files, earlier models serve the same outputs, and every job says what happened.

Each test runs `paradigm-server` as a subprocess on its own copy of one seeded data
directory (iris-lr, version 1, with recorded outputs).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from clients.client import JobFailed, ParadigmClient, ParadigmClientError
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from service.registry.store import FAULT_VARIABLE
from service.training.jobs import INTERRUPTED

SERVER = Path(sys.executable).parent / "paradigm-server"
ROWS = np.random.default_rng(7).uniform(0, 8, (16, 4)).astype(np.float32)  # iris-shaped
LONG_CNN = {"epochs": 1000}  # ~0.2 s an epoch here: it never ends by itself in a test
CANNOT_DROP_CAPABILITIES = 97

# Runs between the test and the server, in a fresh single-threaded interpreter (a
# preexec_fn would run after fork in this process, beside gRPC's threads): applies a
# file-size limit, drops the capabilities that let root write anywhere, then becomes the
# server with exec. Python ignores SIGXFSZ, so writes past the limit fail with EFBIG.
_LAUNCHER = r"""
import ctypes, json, os, resource, sys

config = json.loads(sys.argv[1])
if config["max_file_bytes"]:
    limit = config["max_file_bytes"]
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
if config["drop_capabilities"]:
    caps = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()
    failed = any(libc.prctl(24, cap, 0, 0, 0) for cap in caps)  # PR_CAPBSET_DROP
    failed = failed or libc.capget(ctypes.byref(header), data) != 0
    mask = ~sum(1 << cap for cap in caps) & 0xFFFFFFFF
    for name in ("effective", "permitted", "inheritable"):
        setattr(data[0], name, getattr(data[0], name) & mask)
    if failed or libc.capset(ctypes.byref(header), data) != 0:
        print("cannot drop capabilities:", os.strerror(ctypes.get_errno()), flush=True)
        sys.exit(97)
os.execv(sys.argv[2], sys.argv[2:])
"""


class Server:
    """`paradigm-server` on port 0 over data; its output is collected in `output`."""

    def __init__(
        self,
        data: Path,
        *,
        env: dict[str, str] | None = None,
        max_file_bytes: int = 0,
        drop_capabilities: bool = False,
        wait: bool = True,
    ) -> None:
        port_file = data.parent / f"port-{uuid.uuid4().hex[:8]}"
        command = [
            str(SERVER), "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
            "--metrics-port", "-1", "--data-dir", str(data),
        ]  # fmt: skip
        if max_file_bytes or drop_capabilities:
            config = {"max_file_bytes": max_file_bytes, "drop_capabilities": drop_capabilities}
            command = [sys.executable, "-c", _LAUNCHER, json.dumps(config), *command]
        self.output: list[str] = []
        self.process = subprocess.Popen(
            command,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._client: ParadigmClient | None = None
        if wait:
            try:
                wait_until(lambda: port_file.exists() or self.process.poll() is not None, 90)
                if self.process.poll() == CANNOT_DROP_CAPABILITIES:
                    pytest.skip(self.log)
                assert self.process.poll() is None, f"server exited early:\n{self.log}"
                self._client = ParadigmClient(f"127.0.0.1:{port_file.read_text()}", timeout=60)
                self._client.wait_until_ready(30)
            except BaseException:
                self.kill()
                raise

    @property
    def client(self) -> ParadigmClient:
        assert self._client is not None
        return self._client

    @property
    def log(self) -> str:
        return "".join(self.output[-60:])

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def wait_exit(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        if self._client is not None:
            self._client.close()
        if self.process.poll() is None:
            self.process.kill()
        self.wait_exit()

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            print(f"server output:\n{self.log}")
        self.kill()


@dataclass
class Seed:
    data: Path
    onnx_file: Path
    reference: dict[str, np.ndarray]
    job_id: str


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Seed:
    """A data directory with built-in datasets and iris-lr version 1, and its outputs."""
    root = tmp_path_factory.mktemp("seed")
    with Server(root / "data") as server:
        job = server.client.start_training(
            "iris", "logistic_regression", model_name="iris-lr", seed=0
        )
        server.client.wait_for_job(job.id)
        reference = server.client.infer("iris-lr", ROWS).outputs
        onnx_file = root / "iris-lr.onnx"
        server.client.export_model("iris-lr", onnx_file)
        server.process.send_signal(signal.SIGTERM)
        assert server.wait_exit() == 0
    return Seed(root / "data", onnx_file, reference, job.id)


@pytest.fixture
def data(seed: Seed, tmp_path: Path) -> Path:
    return Path(shutil.copytree(seed.data, tmp_path / "data"))


def wait_until(condition: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


def wait_for_epoch(client: ParadigmClient, job_id: str) -> None:
    """Returns once the job's worker reports a finished epoch: it is really training."""
    for event in client.watch_job(job_id):
        if event.stage == "epoch":
            return
    raise AssertionError(f"job ended before an epoch: {client.get_job(job_id)}")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def workers(server_pid: int) -> list[int]:
    """Training workers of a server: its spawned children (not multiprocessing's tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == server_pid and b"spawn_main" in command and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def assert_serves_reference(client: ParadigmClient, seed: Seed) -> None:
    outputs = client.infer("iris-lr", ROWS, version="1").outputs
    assert outputs.keys() == seed.reference.keys()
    for name, expected in seed.reference.items():
        np.testing.assert_array_equal(outputs[name], expected)


def assert_consistent(data: Path, client: ParadigmClient) -> None:
    """Index == files, every file matches its manifest, and no leftovers anywhere."""
    on_disk = {(f.parent.parent.name, f.parent.name) for f in data.glob("models/*/*/model.onnx")}
    indexed = {(m.name, m.version) for m in client.list_models()}
    assert indexed == on_disk
    for name, version in on_disk:
        directory = data / "models" / name / version
        manifest = json.loads((directory / "manifest.json").read_text())
        digest = hashlib.sha256((directory / "model.onnx").read_bytes()).hexdigest()
        assert (manifest["name"], manifest["version"], manifest["checksum"]) == (
            name, version, digest,
        )  # fmt: skip
    assert not list((data / "staging").iterdir())
    assert not list((data / "uploads").glob("import-*"))
    assert not list((data / "datasets").glob(".upload-*"))


def versions(client: ParadigmClient, name: str) -> list[str]:
    return [model.version for model in client.list_models(name)]


# ----------------------------------------------------------------------- server killed


def test_server_killed_while_training_fails_its_jobs_and_loses_nothing(
    seed: Seed, data: Path
) -> None:
    with Server(data) as server:
        client = server.client
        job = client.start_training("digits", "cnn", hyperparameters=LONG_CNN)
        queued = client.import_model("iris-imported", seed.onnx_file)  # waits behind the cnn
        wait_for_epoch(client, job.id)
        running = workers(server.process.pid)
        assert len(running) == 1
        assert list((data / "uploads").glob("import-*"))  # the queued import's upload
        server.kill()
    # The worker dies with its server: nothing writes into staging behind the next one.
    wait_until(lambda: not alive(running[0]), 10)

    with Server(data) as server:
        client = server.client
        for job_id in (job.id, queued.id):
            restored = client.get_job(job_id)
            assert restored.state == pb.JOB_STATE_FAILED
            assert restored.error == INTERRUPTED
        history = list(client.watch_job(job.id))  # WatchJob replays a restored job
        stages = [event.stage for event in history]
        assert stages[:2] == ["queued", "started"] and "epoch" in stages
        assert history[-1].state == pb.JOB_STATE_FAILED and history[-1].message == INTERRUPTED
        assert [event.sequence for event in history] == list(range(len(history)))
        earlier = client.get_job(seed.job_id)
        assert earlier.state == pb.JOB_STATE_SUCCEEDED and earlier.model_version == "1"
        assert list(client.watch_job(seed.job_id))[-1].state == pb.JOB_STATE_SUCCEEDED
        assert {seed.job_id, job.id, queued.id} <= {j.id for j in client.list_jobs()}
        assert {m.name for m in client.list_models()} == {"iris-lr"}
        assert_serves_reference(client, seed)
        assert_consistent(data, client)


def test_crash_in_publish_leaves_no_partial_version(seed: Seed, data: Path) -> None:
    def train(client: ParadigmClient, seed_value: int) -> pb.Job:
        return client.start_training(
            "iris", "logistic_regression", model_name="iris-lr", seed=seed_value
        )

    # Killed before the rename: the complete staging directory is all there is.
    with Server(data, env={FAULT_VARIABLE: "publish:before-rename"}) as server:
        before = train(server.client, 1)
        assert server.wait_exit() == -signal.SIGKILL
    assert list((data / "staging").iterdir())
    assert not (data / "models" / "iris-lr" / "2").exists()

    # Killed after the rename, before the index knew: the files are complete.
    with Server(data, env={FAULT_VARIABLE: "publish:after-rename"}) as server:
        client = server.client
        failed = client.get_job(before.id)
        assert (failed.state, failed.error) == (pb.JOB_STATE_FAILED, INTERRUPTED)
        assert versions(client, "iris-lr") == ["1"]
        assert_consistent(data, client)
        assert_serves_reference(client, seed)
        after = train(client, 2)
        assert server.wait_exit() == -signal.SIGKILL
    assert (data / "models" / "iris-lr" / "2" / "model.onnx").exists()

    with Server(data) as server:
        client = server.client
        assert versions(client, "iris-lr") == ["1", "2"]  # re-indexed from its directory
        assert_consistent(data, client)
        recovered = client.get_job(after.id)  # its model names the job that made it
        assert (recovered.state, recovered.model_version) == (pb.JOB_STATE_SUCCEEDED, "2")
        assert client.infer("iris-lr", ROWS, version="2").as_numpy("label").shape == (16,)
        assert_serves_reference(client, seed)
        assert client.wait_for_job(train(client, 3).id).model_version == "3"
        assert_consistent(data, client)


# ----------------------------------------------------------------------- workers


def test_worker_killed_or_raising_fails_its_job_while_serving_goes_on(
    seed: Seed, data: Path
) -> None:
    with Server(data) as server:
        client = server.client
        job = client.start_training("digits", "cnn", hyperparameters=LONG_CNN)
        wait_for_epoch(client, job.id)
        [worker] = workers(server.process.pid)

        answers: list[dict[str, np.ndarray]] = []
        errors: list[Exception] = []
        stop = threading.Event()

        def infer_forever() -> None:
            with ParadigmClient(client.target, timeout=30) as own:
                while not stop.is_set():
                    try:
                        answers.append(own.infer("iris-lr", ROWS, version="1").outputs)
                    except Exception as exc:
                        errors.append(exc)

        thread = threading.Thread(target=infer_forever)
        thread.start()
        try:
            wait_until(lambda: len(answers) > 10, 30)
            os.kill(worker, signal.SIGKILL)
            with pytest.raises(JobFailed) as killed:
                client.wait_for_job(job.id)
            after_kill = len(answers)
            wait_until(lambda: len(answers) > after_kill + 20, 30)
        finally:
            stop.set()
            thread.join(30)
        assert killed.value.job.error == "worker process exited with code -9 before finishing"
        assert not errors
        for outputs in answers:
            np.testing.assert_array_equal(outputs["label"], seed.reference["label"])

        # Raises inside the worker: scikit-learn refuses more neighbours than samples.
        raising = client.start_training(
            "iris", "knn", hyperparameters={"n_neighbors": 1000}, model_name="iris-knn"
        )
        with pytest.raises(JobFailed) as raised:
            client.wait_for_job(raising.id)
        assert "n_neighbors" in raised.value.job.error
        assert {m.name for m in client.list_models()} == {"iris-lr"}
        assert_serves_reference(client, seed)
        assert_consistent(data, client)


def test_job_over_max_job_seconds_is_stopped(seed: Seed, data: Path) -> None:
    with Server(data, env={"PARADIGM_MAX_JOB_SECONDS": "2"}) as server:
        client = server.client
        started = time.monotonic()
        job = client.start_training("digits", "cnn", hyperparameters=LONG_CNN)
        with pytest.raises(JobFailed) as failed:
            client.wait_for_job(job.id)
        assert failed.value.job.error == "exceeded max_job_seconds (2 s)"
        assert time.monotonic() - started < 30
        assert not workers(server.process.pid)
        assert_serves_reference(client, seed)
        assert_consistent(data, client)


# ----------------------------------------------------------------------- storage


def big_onnx(path: Path, columns: int) -> Path:
    """A valid model (X @ W) whose file is about 16 * columns bytes."""
    weights = np.ones((4, columns), np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["output"])],
        "big",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, columns])],
        [numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def test_full_disk_fails_writes_cleanly(seed: Seed, data: Path, tmp_path: Path) -> None:
    limit = 1 << 20  # every file the server and its workers write stops at 1 MiB
    rng = np.random.default_rng(0)
    dataset = tmp_path / "big.npz"
    np.savez(dataset, X=rng.normal(size=(4096, 64)), y=rng.integers(0, 2, 4096))  # 2 MiB
    model = big_onnx(tmp_path / "big.onnx", 1 << 17)  # 2 MiB
    codes: dict[str, grpc.StatusCode] = {}
    with Server(data, max_file_bytes=limit) as server:
        client = server.client
        forest = client.start_training("digits", "random_forest", model_name="digits-rf")
        with pytest.raises(JobFailed) as failed:  # its model.onnx is about 3 MiB
            client.wait_for_job(forest.id)
        assert "no space left to write" in failed.value.job.error
        for rpc, call in (
            ("UploadDataset", lambda: client.upload_dataset("big", dataset)),
            ("ImportModel", lambda: client.import_model("big", model)),
        ):
            with pytest.raises(ParadigmClientError) as refused:
                call()
            codes[rpc] = refused.value.code
        assert "big" not in {d.name for d in client.list_datasets()}
        assert {m.name for m in client.list_models()} == {"iris-lr"}
        assert_serves_reference(client, seed)
        assert_consistent(data, client)

    with Server(data) as server:  # the limit lifted: everything as it was
        client = server.client
        assert client.get_job(forest.id).error == failed.value.job.error
        assert_serves_reference(client, seed)
        assert_consistent(data, client)

    # Uploads are written by the servicers; the interceptor maps their OSError too.
    wrong = {rpc: code for rpc, code in codes.items() if code != grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert not wrong


def _read_only(root: Path, writable: bool) -> None:
    for directory, _, files in os.walk(root):
        Path(directory).chmod(0o755 if writable else 0o555)
        for name in files:
            (Path(directory) / name).chmod(0o644 if writable else 0o444)


# As root, file modes bind only a process without CAP_DAC_OVERRIDE: the launcher drops it.
AS_ROOT = os.geteuid() == 0


def test_read_only_data_dir_stops_start_up_with_one_line(data: Path) -> None:
    _read_only(data, writable=False)
    try:
        server = Server(data, drop_capabilities=AS_ROOT, wait=False)
        code = server.wait_exit()
    finally:
        _read_only(data, writable=True)
    if code == CANNOT_DROP_CAPABILITIES:
        pytest.skip(server.log)
    assert code == 1, server.log
    [line] = [line for line in server.output if "could not start" in line]
    assert "read-only or not writable by the server" in line
    assert str(data.resolve()) in line


def test_publish_into_read_only_directory_fails_cleanly(seed: Seed, data: Path) -> None:
    with Server(data, drop_capabilities=AS_ROOT) as server:
        client = server.client
        (data / "models" / "iris-lr").chmod(0o555)
        try:
            job = client.start_training("iris", "logistic_regression", model_name="iris-lr")
            with pytest.raises(JobFailed) as failed:
                client.wait_for_job(job.id)
        finally:
            (data / "models" / "iris-lr").chmod(0o755)
        error = failed.value.job.error
        assert error.startswith("could not publish model 'iris-lr'"), error
        assert "read-only or not writable by the server" in error
        assert versions(client, "iris-lr") == ["1"]
        assert_serves_reference(client, seed)
        assert_consistent(data, client)

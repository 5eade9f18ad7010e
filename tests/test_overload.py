"""Overload: bounded queues answer RESOURCE_EXHAUSTED at once, deadlines are honoured, the
training queue is capped, and uploads are spooled to disk under a size limit.

Every assertion is on statuses and counts; timeouts here only guard against hangs.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
import pytest

from clients.client import ParadigmClient, ParadigmClientError, make_infer_request
from clients.harness import paradigm_server
from service.errors import ResourceExhausted
from service.gen.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from service.serving.batcher import Batcher, BatchingConfig
from service.serving.loaded import LoadedModel
from tests.server import RunningServer

SLOW = "slow"  # an MLP wide enough that a 4096-row run takes a while on one thread
SLOW_LABELS = {"paradigm": "deep", "model": SLOW, "version": "1", "algorithm": "mlp",
               "device": "cpu"}  # fmt: skip
ROWS = np.random.default_rng(0).uniform(0, 16, (4096, 64)).astype(np.float32)
HANG_GUARD_S = 120.0


# -- the batcher on its own -------------------------------------------------------------------


def test_abandoned_requests_give_their_queue_places_back() -> None:
    """A queued request whose caller went away (gRPC cancels it at its deadline) no longer
    counts against the bound, and never runs."""

    async def scenario() -> None:
        gate = threading.Event()
        entered = threading.Event()
        runs: list[int] = []

        def run(feeds: dict[str, np.ndarray], outputs: list[str], rows: int,
                enqueued: list[float]) -> list[np.ndarray]:  # fmt: skip
            entered.set()
            gate.wait(10)
            runs.append(rows)
            return [feeds["x"]]

        loop = asyncio.get_running_loop()
        batcher = Batcher(
            name="m", input_names=["x"], output_names=["y"], run=run,
            run_in_thread=lambda fn, *args: loop.run_in_executor(None, fn, *args),
            config=BatchingConfig(max_batch_size=1, max_queue_size=2), slots=1,
        )  # fmt: skip

        async def queued(n: int) -> asyncio.Task[list[np.ndarray]]:
            """Submits in a new task; returns once it waits in the queue (submit does not
            pause before that, and this resumes only after the task's first step)."""
            started = asyncio.Event()

            async def submit() -> list[np.ndarray]:
                started.set()
                return await batcher.submit({"x": np.zeros((n, 1))}, n, None)

            task = asyncio.create_task(submit())
            await started.wait()
            return task

        blocker = asyncio.create_task(batcher.submit({"x": np.zeros((1, 1))}, 1, None))
        assert await asyncio.to_thread(entered.wait, 10)  # it holds the only slot
        gone = [await queued(7), await queued(7)]
        with pytest.raises(ResourceExhausted):
            await batcher.submit({"x": np.zeros((1, 1))}, 1, None)
        for task in gone:
            task.cancel()
        await asyncio.gather(*gone, return_exceptions=True)  # their callers have gone
        live = [await queued(2), await queued(3)]  # both fit: the cancelled two were dropped
        gate.set()
        await asyncio.gather(blocker, *live)
        assert runs == [1, 2, 3] and batcher.idle

    asyncio.run(scenario())


# -- the real server --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding the slow model; each test serves a copy of it."""
    data = tmp_path_factory.mktemp("overload-data")
    server = RunningServer(data)
    try:
        with ParadigmClient(server.target, timeout=120) as client:
            job = client.start_training(
                "digits", "mlp", model_name=SLOW,
                hyperparameters={"epochs": 1, "hidden_units": 1024}, seed=0,
            )  # fmt: skip
            client.wait_for_job(job.id)
    finally:
        server.stop()
    return data


@pytest.fixture
def serve(trained: Path, tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Starts servers on copies of the trained data directory; stops them afterwards."""
    started: list[RunningServer] = []

    def start(**settings: object) -> RunningServer:
        data = tmp_path / f"data-{len(started)}"
        shutil.copytree(trained, data)
        server = RunningServer(data, **settings)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


async def _flood(target: str, requests: int, timeout: float | None = None) -> Counter[str]:
    """Sends `requests` concurrent 4096-row ModelInfer calls; counts the status codes."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        request = make_infer_request(SLOW, ROWS)

        async def one() -> str:
            try:
                await stub.ModelInfer(request, timeout=timeout)
            except grpc.aio.AioRpcError as error:
                return str(error.code().name)
            return "OK"

        codes = await asyncio.wait_for(
            asyncio.gather(*(one() for _ in range(requests))), HANG_GUARD_S
        )
    return Counter(codes)


def flood(target: str, requests: int, timeout: float | None = None) -> Counter[str]:
    return asyncio.run(_flood(target, requests, timeout))


def sample(server: RunningServer, name: str, **labels: str) -> float:
    return server.metrics_registry.get_sample_value(name, {**SLOW_LABELS, **labels}) or 0.0


def settled(server: RunningServer) -> bool:
    """Waits (bounded) for the in-flight gauge to reach 0; True if it did."""
    for _ in range(200):
        if sample(server, "paradigm_inference_in_flight_requests") == 0:
            return True
        time.sleep(0.05)
    return False


def serves_normally(server: RunningServer) -> bool:
    with ParadigmClient(server.target, timeout=HANG_GUARD_S) as client:
        return client.infer(SLOW, ROWS[:3]).as_numpy("label").shape == (3,)


@pytest.mark.parametrize("batching", [True, False], ids=["batching", "no-batching"])
def test_flood_on_a_tiny_queue_is_refused_at_once(
    serve: Callable[..., RunningServer], batching: bool
) -> None:
    server = serve(batch_max_queue_size=2, inference_threads=1, batching=batching)
    sent = 32
    codes = flood(server.target, sent)
    # One runs, two wait; the rest are refused rather than queued: none hangs.
    assert set(codes) == {"OK", "RESOURCE_EXHAUSTED"}, codes
    assert codes["OK"] >= 3
    assert settled(server) and serves_normally(server)
    counted = {code: sample(server, "paradigm_inference_requests_total", code=code)
               for code in ("OK", "RESOURCE_EXHAUSTED")}  # fmt: skip
    assert counted == {"OK": codes["OK"] + 1, "RESOURCE_EXHAUSTED": codes["RESOURCE_EXHAUSTED"]}


def test_flood_past_max_concurrent_rpcs_is_refused_by_grpc(
    serve: Callable[..., RunningServer],
) -> None:
    server = serve(max_concurrent_rpcs=2, inference_threads=1)
    codes = flood(server.target, 24)
    assert set(codes) == {"OK", "RESOURCE_EXHAUSTED"}, codes
    # gRPC refuses before the data plane sees the request: only the admitted ones count.
    assert sample(server, "paradigm_inference_requests_total", code="RESOURCE_EXHAUSTED") == 0
    assert sample(server, "paradigm_inference_requests_total", code="OK") == codes["OK"]
    assert settled(server)
    # gRPC's limiter counts an RPC until its task has sent the status, a little after the
    # data plane is done with it: allow it a moment to see the flood gone.
    for _ in range(100):
        try:
            assert serves_normally(server)
            break
        except ParadigmClientError as error:
            assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            time.sleep(0.1)
    else:
        raise AssertionError("still refused after the flood")


@pytest.mark.parametrize("batching", [True, False], ids=["batching", "no-batching"])
def test_deadlines_under_load(serve: Callable[..., RunningServer], batching: bool) -> None:
    server = serve(inference_threads=1, batching=batching)
    sent = 16  # about 16 runs of work behind one thread, against a quarter-second deadline
    codes = flood(server.target, sent, timeout=0.25)
    assert set(codes) <= {"OK", "DEADLINE_EXCEEDED"} and codes["DEADLINE_EXCEEDED"] >= 1, codes
    assert settled(server)
    # Requests whose deadline passed while they queued were dropped, not run late.
    assert sample(server, "paradigm_inference_batch_size_count") < sent
    assert serves_normally(server)
    # Each request was counted once; the expired ones as DEADLINE_EXCEEDED, or CANCELLED
    # where the client's own deadline timer fired before the server's.
    names = ("OK", "DEADLINE_EXCEEDED", "CANCELLED")
    counted = {c: sample(server, "paradigm_inference_requests_total", code=c) for c in names}
    assert sum(counted.values()) == sent + 1
    assert counted["DEADLINE_EXCEEDED"] + counted["CANCELLED"] >= 1


def test_a_deleted_version_releases_its_session(serve: Callable[..., RunningServer]) -> None:
    """Its queue (and the session it holds) is dropped once idle, not kept for good."""
    server = serve()
    with ParadigmClient(server.target, timeout=HANG_GUARD_S) as client:
        assert serves_normally(server)
        client.wait_for_job(client.start_training("iris", "logistic_regression").id)
        client.delete_model(SLOW)
        client.infer("iris-logistic_regression", ROWS[:2, :4])  # a first request: a new queue
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, LoadedModel) and o.name == SLOW]
    assert alive == []


# -- training jobs ----------------------------------------------------------------------------


def _wait_running(client: ParadigmClient, job_id: str) -> None:
    """Returns at the job's first event after "queued": the server records it once the job
    has left the queue (its state is no longer QUEUED)."""
    left = threading.Event()

    def follow() -> None:
        for event in client.watch_job(job_id):
            if event.stage != "queued":
                left.set()
                return

    threading.Thread(target=follow, daemon=True).start()
    assert left.wait(HANG_GUARD_S), f"job {job_id} never left the queue"


def test_training_cap_queues_the_second_job(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data", max_concurrent_jobs=1)
    try:
        with ParadigmClient(server.target, timeout=HANG_GUARD_S) as client:
            first = client.start_training("iris", "logistic_regression", model_name="first")
            second = client.start_training("iris", "logistic_regression", model_name="second")
            _wait_running(client, first.id)
            done_first = client.wait_for_job(first.id)
            done_second = client.wait_for_job(second.id)
            # One worker at a time: the second started only once the first had finished.
            assert done_second.started_at.ToDatetime() >= done_first.finished_at.ToDatetime()
            states = [event.stage for event in client.watch_job(second.id)]
            assert states[0] == "queued" and "succeeded" in states
    finally:
        server.stop()


def test_full_training_queue_is_resource_exhausted(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data", max_concurrent_jobs=1, max_queued_jobs=1)
    try:
        with ParadigmClient(server.target, timeout=HANG_GUARD_S) as client:
            running = client.start_training("digits", "mlp", hyperparameters={"epochs": 500})
            _wait_running(client, running.id)
            queued = client.start_training("iris", "logistic_regression")
            with pytest.raises(ParadigmClientError) as refused:
                client.start_training("iris", "logistic_regression")
            assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "training queue is full" in refused.value.details
            assert client.get_job(queued.id).state == pb.JOB_STATE_QUEUED
            client.cancel_job(queued.id)
            client.cancel_job(running.id)
            # The queue has room again.
            client.wait_for_job(client.start_training("iris", "logistic_regression").id)
    finally:
        server.stop()


# -- uploads ----------------------------------------------------------------------------------


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_uploads_over_the_limit_are_refused_and_never_held_in_memory(tmp_path: Path) -> None:
    limit = 128 << 20
    upload = tmp_path / "big.npz"
    with upload.open("wb") as handle:  # over the limit; its contents are never parsed
        chunk = np.random.default_rng(1).bytes(1 << 20)
        for _ in range((limit >> 20) + 16):
            handle.write(chunk)
    junk_model = tmp_path / "big.onnx"
    junk_model.write_bytes(b"\0" * (2 << 20))
    data = tmp_path / "data"
    env = {"PARADIGM_MAX_UPLOAD_BYTES": str(limit), "PARADIGM_MAX_MODEL_BYTES": str(1 << 20)}
    with (
        paradigm_server(tmp_path, "upload-server", data, env=env, metrics=False) as server,
        ParadigmClient(server.target, timeout=HANG_GUARD_S) as client,
    ):
        client.wait_until_ready(60)
        # Start-up work that goes on in the background (the search database loads Optuna
        # and SQLAlchemy) must not be counted as the upload's memory: wait for it first.
        with pytest.raises(ParadigmClientError, match="NOT_FOUND"):
            client.get_search("0" * 12)
        baseline = _rss_bytes(server.pid)
        peak = baseline
        stop = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not stop.wait(0.002):
                peak = max(peak, _rss_bytes(server.pid))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            with pytest.raises(ParadigmClientError) as refused:
                client.upload_dataset("big", upload, format="npz")
        finally:
            stop.set()
            watcher.join(10)
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"limit of {limit} bytes" in refused.value.details
        # The server wrote what it accepted to disk chunk by chunk: its memory grew by what
        # gRPC's flow-control windows and a few 1 MiB messages in flight hold (measured:
        # 20-30 MiB, the same for limits from 16 to 384 MiB), not by the upload.
        assert peak - baseline < limit // 2, (baseline, peak)
        with pytest.raises(ParadigmClientError) as refused:
            client.import_model("big", junk_model)
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "big" not in {d.name for d in client.list_datasets()}
        assert list((data / "datasets").glob(".upload-*")) == []
        assert list((data / "uploads").glob("import-*")) == []

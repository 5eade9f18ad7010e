"""Dynamic batching: the Batcher on its own, then through the real server."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from clients.client import ParadigmClient, ParadigmClientError
from service.errors import DeadlineExceeded, ResourceExhausted
from service.serving.batcher import Batcher, BatchingConfig
from tests.server import RunningServer


class Model:
    """A real function as the model: doubles its input, records each batch, can block."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set by every run as it starts
        self.contexts: list[str] = []

    def __call__(
        self, feeds: dict[str, np.ndarray], outputs: list[str], rows: int, enqueued: list[float]
    ) -> list[np.ndarray]:
        self.contexts.append(caller.get())
        self.entered.set()
        self.gate.wait(10)
        assert rows == len(feeds["x"]) and len(enqueued) >= 1
        self.batches.append(rows)
        if (feeds["x"] < 0).any():
            raise ValueError("negative input")
        return [feeds["x"] * 2, feeds["x"].sum(axis=1)]

    async def running(self) -> None:
        """Returns once a run has started (and, with the gate closed, holds its slot)."""
        assert await asyncio.to_thread(self.entered.wait, 10), "no run started"


#: Stands for the request's log fields: which caller a run's thread works for.
caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="-")


def make(model: Model, **config: int) -> tuple[Batcher, ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()
    batcher = Batcher(
        name="m",
        input_names=["x"],
        output_names=["double", "sum"],
        run=model,
        # As the data plane does: the thread runs in a copy of the submitting context.
        run_in_thread=lambda run, *args: loop.run_in_executor(
            pool, contextvars.copy_context().run, run, *args
        ),
        config=BatchingConfig(**config),  # type: ignore[arg-type]
        slots=1,
    )
    return batcher, pool


async def blocking(batcher: Batcher, model: Model) -> asyncio.Task[list[np.ndarray]]:
    """A one-row request that takes the only slot and holds it until the gate opens."""
    model.gate.clear()
    model.entered.clear()
    task = asyncio.create_task(batcher.submit(rows(0, 1), 1, None))
    await model.running()
    return task


async def queued(
    batcher: Batcher, feeds: dict[str, np.ndarray], n: int, deadline: float | None = None
) -> asyncio.Task[list[np.ndarray]]:
    """Submits in a new task; returns once the request waits in the batcher's queue.

    submit runs without a pause up to its wait for the result, so once the task has
    started it has queued (or failed): `started` is set at its start, and this coroutine
    resumes only after that step of the task is over."""
    started = asyncio.Event()

    async def submit() -> list[np.ndarray]:
        started.set()
        return await batcher.submit(feeds, n, deadline)

    task = asyncio.create_task(submit())
    await started.wait()
    return task


def rows(start: int, n: int) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, start + n * 2, dtype=np.float32).reshape(n, 2)}


def test_queued_requests_run_together_and_split_back() -> None:
    async def scenario() -> None:
        model = Model()
        batcher, pool = make(model, max_batch_size=64)
        first = await blocking(batcher, model)  # the first request holds the only slot ...
        # ... while these queue, and then run as one batch.
        sizes = [1, 3, 2, 5]
        queued_ = [await queued(batcher, rows(10 * i, n), n) for i, n in enumerate(sizes)]
        model.gate.set()
        results = await asyncio.gather(first, *queued_)
        assert model.batches == [1, sum(sizes)]
        for (double, total), (i, n) in zip(results[1:], enumerate(sizes), strict=True):
            np.testing.assert_array_equal(double, rows(10 * i, n)["x"] * 2)
            np.testing.assert_array_equal(total, rows(10 * i, n)["x"].sum(axis=1))
        batcher.close()
        pool.shutdown()

    asyncio.run(scenario())


def test_max_batch_size_and_a_lone_request_runs_at_once() -> None:
    async def scenario() -> None:
        model = Model()
        batcher, pool = make(model, max_batch_size=4)
        await batcher.submit(rows(0, 2), 2, None)
        assert model.batches == [2] and not batcher.dispatcher_started  # no queue, no hop
        blocker = await blocking(batcher, model)
        queued_ = [await queued(batcher, rows(0, 3), 3) for _ in range(3)]
        model.gate.set()
        await asyncio.gather(blocker, *queued_)
        assert model.batches[1:] == [1, 3, 3, 3]  # 3 + 3 > 4: never over the limit
        batcher.close()
        pool.shutdown()

    asyncio.run(scenario())


def test_a_batch_runs_in_its_first_requests_context() -> None:
    """The thread of a batched run carries the context (log fields) of the batch's first
    request, not that of whichever request started the batcher's dispatcher."""

    async def scenario() -> None:
        model = Model()
        batcher, pool = make(model, max_batch_size=64)
        for round_ in ("1", "2"):  # the dispatcher starts in round 1's context
            caller.set(f"blocker {round_}")
            blocker = await blocking(batcher, model)
            waiting = []
            for name in ("second", "third"):
                caller.set(f"{name} {round_}")
                waiting.append(await queued(batcher, rows(0, 1), 1))
            model.gate.set()
            await asyncio.gather(blocker, *waiting)
        assert model.batches == [1, 2, 1, 2]
        assert model.contexts == ["blocker 1", "second 1", "blocker 2", "second 2"]
        batcher.close()
        pool.shutdown()

    asyncio.run(scenario())


def test_errors_full_queue_expired_and_cancelled() -> None:
    async def scenario() -> None:
        model = Model()
        batcher, pool = make(model, max_batch_size=64, max_queue_size=2)
        blocker = await blocking(batcher, model)
        bad = await queued(batcher, {"x": -np.ones((1, 2), np.float32)}, 1)
        expired = await queued(batcher, rows(0, 1), 1, time.perf_counter())
        with pytest.raises(ResourceExhausted, match="2 requests queued"):
            await batcher.submit(rows(0, 1), 1, None)
        model.gate.set()
        await blocker
        with pytest.raises(DeadlineExceeded):
            await expired
        with pytest.raises(ValueError, match="negative"):
            await bad
        # The expired request never ran: only the blocker's and the bad request's rows did.
        assert model.batches == [1, 1]
        blocker = await blocking(batcher, model)
        gone = await queued(batcher, rows(0, 7), 7)
        gone.cancel()
        model.gate.set()
        await blocker
        # A request sent now runs after whatever queued before it had its turn.
        await batcher.submit(rows(0, 2), 2, None)
        assert 7 not in model.batches  # a caller that went away is not run
        batcher.close()
        pool.shutdown()

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningServer]]:
    """The same trained CNN served with batching on and off."""
    on = RunningServer(tmp_path_factory.mktemp("batch-on"))
    with ParadigmClient(on.target) as client:
        client.wait_for_job(
            client.start_training("digits", "cnn", hyperparameters={"epochs": 1}).id
        )
        path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
        client.export_model("digits-cnn", path)
    off = RunningServer(tmp_path_factory.mktemp("batch-off"), batching=False)
    with ParadigmClient(off.target) as client:
        client.wait_for_job(client.import_model("digits-cnn", path).id)
    yield {"on": on, "off": off}
    on.stop()
    off.stop()


def concurrent_infer(target: str, inputs: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    with ParadigmClient(target) as client, ThreadPoolExecutor(16) as pool:
        results = pool.map(lambda x: client.infer("digits-cnn", x).outputs, inputs)
        return list(results)


def test_batched_results_equal_unbatched(servers: dict[str, RunningServer]) -> None:
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(0, 16, (int(n), 64)).astype(np.float32)
              for n in rng.integers(1, 9, size=200)]  # fmt: skip
    batched = concurrent_infer(servers["on"].target, inputs)
    single = concurrent_infer(servers["off"].target, inputs)
    for got, want in zip(batched, single, strict=True):
        np.testing.assert_array_equal(got["label"], want["label"])
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-6)
    # Batching really happened: fewer model runs than requests.
    registry = servers["on"].metrics_registry
    runs = registry.get_sample_value(
        "paradigm_inference_batch_size_count",
        {"paradigm": "deep", "model": "digits-cnn", "version": "1", "algorithm": "cnn",
         "device": "cpu"},
    )  # fmt: skip
    assert runs is not None and runs < len(inputs)


def test_full_queue_is_resource_exhausted_at_once(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data", batch_max_queue_size=1, inference_threads=1,
                           batch_max_size=1)  # fmt: skip
    try:
        with ParadigmClient(server.target) as client:
            client.wait_for_job(
                client.start_training("digits", "cnn", hyperparameters={"epochs": 1}).id
            )
            big = np.random.default_rng(1).uniform(0, 16, (4096, 64)).astype(np.float32)
            codes = []

            def call() -> None:
                try:
                    client.infer("digits-cnn", big)
                    codes.append("OK")
                except ParadigmClientError as error:
                    codes.append(error.code.name)

            threads = [threading.Thread(target=call) for _ in range(12)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        assert "OK" in codes and grpc.StatusCode.RESOURCE_EXHAUSTED.name in codes
        assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}
    finally:
        server.stop()

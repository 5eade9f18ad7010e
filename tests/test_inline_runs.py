"""Tiny models on the event loop (service/serving/inline.py): which runs stay on the loop,
and the bound that sends a model back to threads for good."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clients.client import ParadigmClient
from service.serving.inline import TRIPS_ALLOWED, InlineRuns
from tests.server import RunningServer


def spin(seconds: float) -> None:
    """Burns CPU of this thread (the bound counts CPU time, not wall time)."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


async def runs_on(runner: InlineRuns, rows: int, cost: float = 0.0) -> str:
    """Which thread a run of `rows` rows costing `cost` CPU seconds ran in."""

    def run_batch(feeds: Any, outputs: Any, rows: int, enqueued: Any) -> str:
        spin(cost)
        return threading.current_thread().name

    return await runner(run_batch, {}, [], rows, [])


def test_small_batches_run_on_the_loop_bigger_ones_in_a_thread() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1, thread_name_prefix="inference") as pool:
            runner = InlineRuns(
                "m", run_seconds=10e-6, bound_seconds=50e-6,
                in_thread=lambda run, *args: loop.run_in_executor(pool, run, *args),
            )  # fmt: skip
            assert runner.max_rows == 5
            here = threading.current_thread().name
            assert await runs_on(runner, rows=1) == here
            assert await runs_on(runner, rows=5) == here
            assert (await runs_on(runner, rows=6)).startswith("inference")

    asyncio.run(scenario())


def test_a_model_that_turns_slow_goes_back_to_threads_after_a_bounded_number_of_runs() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1, thread_name_prefix="inference") as pool:
            runner = InlineRuns(
                "m", run_seconds=10e-6, bound_seconds=50e-6,
                in_thread=lambda run, *args: loop.run_in_executor(pool, run, *args),
            )  # fmt: skip
            here = threading.current_thread().name
            for _ in range(TRIPS_ALLOWED):
                assert runner.inline
                assert await runs_on(runner, rows=1, cost=0.002) == here
            assert not runner.inline
            assert (await runs_on(runner, rows=1)).startswith("inference")

    asyncio.run(scenario())


def test_errors_of_an_inline_run_reach_the_caller() -> None:
    async def scenario() -> None:
        runner = InlineRuns("m", 10e-6, 50e-6, in_thread=lambda *a: pytest.fail("no thread"))

        def broken(*args: Any) -> None:
            raise ValueError("bad input for the graph")

        with pytest.raises(ValueError, match="bad input"):
            await runner(broken, {}, [], 1, [])

    asyncio.run(scenario())


@pytest.mark.parametrize("inline_run_us", [0, 1_000_000])
def test_answers_are_the_same_on_the_loop_and_in_threads(
    tmp_path: Path, inline_run_us: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Every CPU model inline (a bound of one second) or none: same labels, same batching."""
    caplog.set_level(logging.INFO, logger="service.serving.dataplane")
    server = RunningServer(tmp_path, inline_run_us=inline_run_us)
    try:
        with ParadigmClient(server.target, timeout=120) as client:
            client.wait_for_job(client.start_training("iris", "logistic_regression", seed=0).id)
            rows = np.random.default_rng(1).uniform(0, 7, (200, 4)).astype(np.float32)
            whole = client.infer("iris-logistic_regression", rows).as_numpy("label")
            one_by_one = [
                client.infer("iris-logistic_regression", rows[i : i + 1]).as_numpy("label")[0]
                for i in range(0, 200, 20)
            ]
        assert list(whole[::20]) == one_by_one
        assert set(whole) <= {0, 1, 2} and len(set(whole)) > 1
        on_loop = "iris-logistic_regression version 1 runs on the event loop" in caplog.text
        assert on_loop == (inline_run_us > 0)
    finally:
        server.stop()

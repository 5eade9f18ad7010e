"""Warm workers: jobs fork from a preloaded forkserver, each still a process of its own."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import generate_latest

from clients.client import ParadigmClient
from service import launcher
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from tests.server import RunningServer

WARM_TIMEOUT_S = 120


def _starts(server: RunningServer, start: str) -> float:
    for line in generate_latest(server.metrics_registry).decode().splitlines():
        if line.startswith("paradigm_worker_start_seconds_count{") and f'start="{start}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_jobs_fork_warm_once_the_preload_is_done(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data")
    try:
        deadline = time.monotonic() + WARM_TIMEOUT_S
        while not launcher.warm() and time.monotonic() < deadline:
            time.sleep(0.1)  # the preload runs in a thread; there is no event to wait on
        assert launcher.warm(), f"no warm workers after {WARM_TIMEOUT_S} s"
        before = _starts(server, "warm")
        with ParadigmClient(server.target, timeout=120) as client:
            jobs = [
                client.wait_for_job(client.start_training("iris", algorithm, seed=0).id)
                for algorithm in ("logistic_regression", "mlp", "logistic_regression")
            ]
            assert [job.state for job in jobs] == [pb.JOB_STATE_SUCCEEDED] * 3
            # Three fresh processes: each job published its own version.
            assert sorted(job.model_version for job in jobs if job.algorithm != "mlp") == [
                "1",
                "2",
            ]
            cancelled = client.start_training("digits", "mlp", hyperparameters={"epochs": 500})
            client.cancel_job(cancelled.id)
            assert client.get_job(cancelled.id).state == pb.JOB_STATE_CANCELLED
            after = client.wait_for_job(client.start_training("iris", "knn").id)
            assert after.state == pb.JOB_STATE_SUCCEEDED  # the fork server outlives a kill
        assert _starts(server, "warm") - before >= 4
    finally:
        server.stop()

"""`paradigm-server --workers N`: serving processes that share one port.

One supervisor, an owner (slot 0) that runs the jobs, and followers that serve every model
and forward the control plane to it. Each client here opens its own TCP connection, so the
kernel spreads them over the workers as it spreads real clients.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.client import ParadigmClient
from clients.harness import paradigm_server, paradigm_server_command
from service.settings import Settings
from tests.test_server_process import scrape

ROWS = np.random.default_rng(0).uniform(0, 6, (3, 4)).astype(np.float32)
STARTED = re.compile(r"serving worker (\d+) started \(pid (\d+)\)")


def worker_pids(log: Path) -> dict[int, int]:
    """The latest pid of each slot, from the supervisor's log."""
    return {int(slot): int(pid) for slot, pid in STARTED.findall(log.read_text())}


def fresh(target: str) -> ParadigmClient:
    return ParadigmClient(target, timeout=60, own_connection=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def health(target: str) -> int:
    with grpc.insecure_channel(target, [("grpc.use_local_subchannel_pool", 1)]) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status


def test_workers_resolve_auto_to_the_cores_and_refuse_zero() -> None:
    assert Settings(workers="auto").resolved_workers() == len(os.sched_getaffinity(0))
    assert Settings(workers="3").resolved_workers() == 3
    with pytest.raises(ValueError, match="at least 1"):
        Settings(workers=0)


def test_two_workers_serve_train_count_and_survive_a_killed_worker(tmp_path: Path) -> None:
    http_port_file = tmp_path / "http.port"
    args = ["--workers", "2", "--http-port", "0", "--http-port-file", str(http_port_file)]
    with paradigm_server(tmp_path, "workers", tmp_path / "data", args=args) as server:
        pids = worker_pids(server.log)
        assert sorted(pids) == [0, 1] and len(set(pids.values())) == 2

        # Jobs run once, in the owner, whichever worker the call reached; every worker
        # serves the new version as soon as its job says SUCCEEDED.
        sent_rows = 0
        job_ids = []
        for expected_version in ("1", "2"):
            with fresh(server.target) as client:
                job = client.start_training("iris", "logistic_regression")
                assert client.wait_for_job(job.id).state == 3  # SUCCEEDED
                job_ids.append(job.id)
            for _ in range(12):
                with fresh(server.target) as client:
                    answer = client.infer("iris-logistic_regression", ROWS)
                    assert answer.model_version == expected_version
                    assert answer.as_numpy("label").shape == (3,)
                    sent_rows += len(ROWS)
        # REST shares its port the same way, on the same data planes.
        http = f"http://127.0.0.1:{http_port_file.read_text().strip()}"
        body = json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 4],
                         "data": ROWS.ravel().tolist()}]}
        ).encode()  # fmt: skip
        for _ in range(6):
            request = urllib.request.Request(
                f"{http}/v2/models/iris-logistic_regression/infer", data=body, method="POST"
            )
            with urllib.request.urlopen(request, timeout=30) as answer:
                assert json.load(answer)["model_version"] == "2"
            sent_rows += len(ROWS)
        for _ in range(6):
            with fresh(server.target) as client:
                listed = {job.id for job in client.list_jobs()}
                assert set(job_ids) <= listed
        # A client stream (upload) and a server stream (watch) are forwarded whole.
        table = tmp_path / "small.csv"
        table.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40)))
        for number in range(4):
            with fresh(server.target) as client:
                client.upload_dataset(f"small{number}", table, label_column="label")
        for number in range(4):
            with fresh(server.target) as client:
                assert client.get_dataset(f"small{number}").n_samples == 40

        # One /metrics and one cost report, each summing every worker exactly.
        assert server.metrics_url is not None
        with urllib.request.urlopen(server.metrics_url) as answer:
            samples = scrape(answer.read().decode())
        served = sum(value for _, value in samples["paradigm_predictions_total"])
        assert served == sent_rows
        serve_seconds = sum(
            value
            for labels, value in samples["paradigm_device_seconds_total"]
            if labels["phase"] == "serve"
        )
        with fresh(server.target) as client:
            report = client.cost_report("iris-logistic_regression")
        assert sum(line.serving.predictions for line in report.models) == sent_rows
        reported_seconds = sum(line.serving.total.device_seconds for line in report.models)
        assert reported_seconds == pytest.approx(serve_seconds, rel=1e-9)
        assert [v for _, v in samples["paradigm_serving_workers_ready"]] == [2]

        # A killed follower is replaced while the owner answers; health is SERVING again.
        os.kill(pids[1], signal.SIGKILL)
        # Until the supervisor has reaped it (all its threads gone, its listener closed),
        # connections may still land on the dying worker and be reset: clients retry those.
        reaped = f"serving worker 1 (pid {pids[1]}) exited"
        while reaped not in server.log.read_text():
            time.sleep(0.01)
        answered = 0
        deadline = time.monotonic() + 120
        while worker_pids(server.log)[1] == pids[1] or health(server.target) != 1:
            assert time.monotonic() < deadline, "worker 1 was not replaced"
            with fresh(server.target) as client:
                answer = client.infer("iris-logistic_regression", ROWS)
                assert answer.as_numpy("label").shape == (3,)
                answered += 1
        assert answered > 0
        replacement = worker_pids(server.log)[1]
        with fresh(server.target) as client:
            assert client.infer("iris-logistic_regression", ROWS).model_version == "2"
        with urllib.request.urlopen(server.metrics_url) as answer:
            samples = scrape(answer.read().decode())
        restarts = samples["paradigm_serving_worker_restarts_total"]
        assert [(labels["slot"], value) for labels, value in restarts] == [("1", 1.0)]
        # What the dead worker had charged still counts.
        served = sum(value for _, value in samples["paradigm_predictions_total"])
        assert served >= sent_rows + answered * len(ROWS)

        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
        assert not any(alive(pid) for pid in (pids[0], replacement))


def test_workers_refuse_a_port_another_program_holds(tmp_path: Path) -> None:
    # Another program's listener with SO_REUSEPORT set: only a plain bind notices it.
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        command = [
            *paradigm_server_command(), "--workers", "2", "--host", "127.0.0.1",
            "--port", str(port), "--metrics-port", "-1", "--data-dir", str(tmp_path / "d"),
        ]  # fmt: skip
        finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 1
    assert "could not start" in finished.stderr and str(port) in finished.stderr

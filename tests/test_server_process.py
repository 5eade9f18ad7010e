"""The `paradigm-server` console script as an operator runs it: flags, environment, port
file, a serving process free of torch and scikit-learn, metrics, and SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from clients.client import ParadigmClient


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_file(path: Path, process: subprocess.Popen[bytes], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        assert process.poll() is None, "server exited early"
        time.sleep(0.1)
    raise TimeoutError(f"{path} did not appear")


def mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_console_script_serves_without_torch_and_stops_on_sigterm(tmp_path: Path) -> None:
    executable = Path(sys.executable).parent / "paradigm-server"
    metrics_port = free_port()
    port_file = tmp_path / "port"
    environment = {**os.environ, "PARADIGM_DATA_DIR": str(tmp_path / "data")}
    process = subprocess.Popen(
        [str(executable), "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
         "--metrics-port", str(metrics_port)],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        port = int(wait_for_file(port_file, process))
        with ParadigmClient(f"127.0.0.1:{port}", timeout=120) as client:
            client.wait_until_ready(30)
            for algorithm, params in (("random_forest", {"n_estimators": 10}),
                                      ("cnn", {"epochs": 1})):  # fmt: skip
                job = client.start_training("digits", algorithm, hyperparameters=params)
                client.wait_for_job(job.id)
            rows = np.random.default_rng(0).uniform(0, 16, (4, 64)).astype(np.float32)
            for model in ("digits-random_forest", "digits-cnn"):
                assert client.infer(model, rows).as_numpy("label").shape == (4,)
        assert (tmp_path / "data" / "models" / "digits-cnn" / "1" / "model.onnx").exists()
        maps = mapped_libraries(process.pid)
        assert "onnxruntime" in maps  # the check can see native libraries at all
        assert "libtorch" not in maps and "/sklearn/" not in maps
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as answer:
            text = answer.read().decode()
        assert 'paradigm_inference_requests_total{code="OK",device="cpu",model="digits-cnn"' in (
            text
        )
        assert (
            'paradigm_training_jobs_total{algorithm="cnn",paradigm="deep",state="succeeded"}'
            in (text)
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

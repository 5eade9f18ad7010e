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
from prometheus_client.parser import text_string_to_metric_families

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


def scrape(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Parsed exposition text: sample name -> [(labels, value)]."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


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
        samples = scrape(text)
        ok = samples["paradigm_inference_requests_total"]
        assert any(lb["model"] == "digits-cnn" and lb["code"] == "OK" for lb, _ in ok)
        jobs = samples["paradigm_training_jobs_total"]
        assert any(lb["algorithm"] == "cnn" and lb["state"] == "succeeded" for lb, _ in jobs)
        # Both phases were charged, for both paradigms, with the energy source named.
        device_seconds = samples["paradigm_device_seconds_total"]
        for phase in ("train", "serve"):
            for paradigm in ("classical", "deep"):
                charged = [
                    value for labels, value in device_seconds
                    if labels["phase"] == phase and labels["paradigm"] == paradigm
                ]  # fmt: skip
                assert charged and sum(charged) > 0, (phase, paradigm)
        sources = {labels["source"] for labels, _ in samples["paradigm_energy_joules_total"]}
        assert sources and sources <= {"estimate", "rapl"}  # no GPU here, so no nvml
        assert sum(v for _, v in samples["paradigm_cost_dollars_total"]) > 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

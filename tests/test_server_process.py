"""The `paradigm-server` console script as an operator runs it: flags, environment, port
file, a serving process free of torch and scikit-learn, metrics, and SIGTERM."""

from __future__ import annotations

import signal
import sys
import urllib.request
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from clients.client import ParadigmClient
from clients.harness import paradigm_server


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
    # The console script itself, its data directory from the environment.
    executable = Path(sys.executable).parent / "paradigm-server"
    environment = {"PARADIGM_DATA_DIR": str(tmp_path / "data")}
    with paradigm_server(
        tmp_path, "server", None, command=[str(executable)], env=environment
    ) as server:
        with ParadigmClient(server.target, timeout=120) as client:
            client.wait_until_ready(30)
            for algorithm, params in (("random_forest", {"n_estimators": 10}),
                                      ("cnn", {"epochs": 1})):  # fmt: skip
                job = client.start_training("digits", algorithm, hyperparameters=params)
                client.wait_for_job(job.id)
            rows = np.random.default_rng(0).uniform(0, 16, (4, 64)).astype(np.float32)
            for model in ("digits-random_forest", "digits-cnn"):
                assert client.infer(model, rows).as_numpy("label").shape == (4,)
        assert (tmp_path / "data" / "models" / "digits-cnn" / "1" / "model.onnx").exists()
        maps = mapped_libraries(server.pid)
        assert "onnxruntime" in maps  # the check can see native libraries at all
        assert "libtorch" not in maps and "/sklearn/" not in maps
        assert server.metrics_url is not None
        with urllib.request.urlopen(server.metrics_url) as answer:
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
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0

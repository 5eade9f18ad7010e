"""Hardware cost: measured per request and per job, reported by the cost RPC and the CLI."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from clients.client import ParadigmClient
from service.cost.energy import CpuEnergyMeter, RaplPackages
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from tests.server import RunningServer

WATTS = 12.5
PRICE = 0.09


@pytest.fixture(scope="module")
def costed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # RAPL off: the estimate's arithmetic is then exactly checkable on any host.
    server = RunningServer(
        tmp_path_factory.mktemp("cost"),
        use_rapl=False,
        cpu_watts_per_core=WATTS,
        cpu_price_per_core_hour=PRICE,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def served(costed: RunningServer) -> dict[str, int]:
    """Trains one classical and one deep model and serves each a known number of rows."""
    rows = np.random.default_rng(0).uniform(0, 16, (64, 64)).astype(np.float32)
    counts = {}
    with ParadigmClient(costed.target, timeout=120) as client:
        for algorithm, params in (("logistic_regression", {}), ("cnn", {"epochs": 1})):
            job = client.wait_for_job(
                client.start_training("digits", algorithm, hyperparameters=params).id
            )
            counts[job.model_name] = 0
            for batch in (1, 1, 8, 64, 64):
                client.infer(job.model_name, rows[:batch])
                counts[job.model_name] += batch
    return counts


def test_cost_report_per_model_and_paradigm(costed: RunningServer, served: dict[str, int]) -> None:
    with ParadigmClient(costed.target) as client:
        report = client.cost_report()
    assert dict(report.price_per_device_hour) == {"cpu": PRICE, "cuda": 4.0}
    by_name = {m.name: m for m in report.models}
    for name, predictions in served.items():
        line = by_name[name]
        assert line.serving.predictions == predictions and line.serving.requests == 5
        total = line.serving.total
        assert total.device_seconds > 0 and total.energy_source == "estimate"
        assert total.joules == pytest.approx(total.device_seconds * WATTS)
        assert total.dollars == pytest.approx(total.device_seconds / 3600 * PRICE)
        each = line.serving.per_1k_predictions
        assert each.joules == pytest.approx(total.joules * 1000 / predictions)
        training = line.training
        assert training.device_seconds > 0 and training.joules > 0
        assert training.joules == pytest.approx(training.device_seconds * WATTS)
    paradigms = {(pb.Paradigm.Name(g.paradigm), g.device): g for g in report.paradigms}
    assert set(paradigms) == {("PARADIGM_CLASSICAL", "cpu"), ("PARADIGM_DEEP", "cpu")}
    deep = paradigms[("PARADIGM_DEEP", "cpu")]
    assert deep.serving.predictions == served["digits-cnn"] and deep.models == 1
    # Measured, not asserted as a speed: the CNN costs more CPU per prediction than the
    # logistic regression, by a wide margin (recorded in docs/metrics.md).
    classical = paradigms[("PARADIGM_CLASSICAL", "cpu")]
    assert deep.serving.per_1k_predictions.device_seconds > (
        classical.serving.per_1k_predictions.device_seconds
    )


def test_training_cost_is_in_the_manifest(costed: RunningServer, served: dict[str, int]) -> None:
    with ParadigmClient(costed.target) as client:
        model = client.get_model("digits-cnn")
        job = next(j for j in client.list_jobs() if j.model_name == "digits-cnn")
    assert model.training_cost.device_seconds > 0
    assert model.training_cost.energy_source == "estimate"
    # A worker's CPU time includes its imports but cannot be less than the fit itself
    # (single-threaded fit), so the charge covers at least the measured fit.
    assert model.training_cost.device_seconds >= 0.5 * job.metrics["fit_seconds"]
    manifest = costed.settings.data_dir / "models" / "digits-cnn" / "1" / "manifest.json"
    assert '"training_cost"' in manifest.read_text()


def test_costs_cli(costed: RunningServer, served: dict[str, int]) -> None:
    cli = str(Path(sys.executable).parent / "paradigm")
    shown = subprocess.run(
        [cli, "--target", costed.target, "costs"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert "J/1k" in shown.stdout and "digits-cnn" in shown.stdout and "estimate" in shown.stdout
    models = subprocess.run(
        [cli, "--target", costed.target, "models"], capture_output=True, text=True, timeout=60
    )
    assert "train J" in models.stdout


def fake_rapl(root: Path, energy_uj: int, max_uj: int) -> Path:
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    sub = root / "intel-rapl:0:0"  # a core sub-zone: must not be counted twice
    sub.mkdir(exist_ok=True)
    (sub / "name").write_text("core\n")
    (sub / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (sub / "energy_uj").write_text("0\n")
    return zone


def test_rapl_reads_packages_and_survives_wraparound(tmp_path: Path) -> None:
    zone = fake_rapl(tmp_path, energy_uj=999_000_000, max_uj=1_000_000_000)
    packages = RaplPackages.open(tmp_path)
    assert packages is not None
    (zone / "energy_uj").write_text("4000000\n")  # wrapped: 1 J to the top, then 4 J
    assert packages.read_delta_joules() == pytest.approx(5.0, abs=1e-6)
    assert RaplPackages.open(tmp_path / "nothing") is None
    meter = CpuEnergyMeter(7.0, rapl=packages)
    assert meter.source == "rapl"
    assert CpuEnergyMeter(7.0, use_rapl=False).joules(2.0) == 14.0


def test_series_exist_at_zero_before_the_first_request(tmp_path: Path) -> None:
    """Prometheus' increase() cannot see a counter's first value: a model's series must
    exist (at zero) before its traffic, or a short burst of requests is invisible."""
    import time

    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    server = RunningServer(tmp_path / "data", use_rapl=False)
    try:
        with ParadigmClient(server.target) as client:
            client.wait_for_job(client.start_training("iris", "naive_bayes", model_name="nb").id)
        wanted = {
            "paradigm_predictions_total",
            "paradigm_device_seconds_total",
            "paradigm_energy_joules_total",
            "paradigm_cost_dollars_total",
            "paradigm_inference_requests_total",
        }
        deadline = time.monotonic() + 30
        while True:
            text = generate_latest(server.metrics_registry).decode()
            found = {
                sample.name: sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.labels.get("model") == "nb" and sample.labels.get("phase", "serve")
                == "serve" and sample.name in wanted
            }  # fmt: skip
            if set(found) == wanted or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert set(found) == wanted
        assert all(value == 0 for value in found.values()), found
    finally:
        server.stop()

"""MLflow tracking against a real `mlflow server` (tests/mlflow_server.py): each training job
is a run with its params, per-epoch and held-out metrics, tags, cost and artifacts, and the
model names its run; a tracking server that is down fails no job."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clients.client import ParadigmClient
from clients.mlflow_server import MLFLOW, NOT_INSTALLED, MlflowServer, free_port
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from tests.server import RunningServer

CLI = str(Path(sys.executable).parent / "paradigm")
HELD_OUT = {"classical": "accuracy", "deep": "accuracy"}


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    if not MLFLOW.exists():
        pytest.skip(NOT_INSTALLED)
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tracked(
    mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    # A generous timeout: a fresh MLflow server's first calls took ~5 s on 2 busy cores
    # (its lazy imports), and these tests are about what a run holds, not about timeouts.
    server = RunningServer(
        tmp_path_factory.mktemp("tracked"),
        mlflow_tracking_uri=mlflow_server.url,
        mlflow_timeout_seconds=30.0,
    )
    yield server
    server.stop()


def _by_key(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: item["value"] for item in items}


@pytest.mark.parametrize(
    ("paradigm", "dataset", "algorithm", "hyperparameters"),
    [
        ("classical", "iris", "logistic_regression", {"C": 0.5}),
        ("deep", "wine", "mlp", {"epochs": 3, "batch_size": 32}),
    ],
)
def test_a_training_job_is_an_mlflow_run(
    tracked: RunningServer,
    mlflow_server: MlflowServer,
    paradigm: str,
    dataset: str,
    algorithm: str,
    hyperparameters: dict[str, Any],
) -> None:
    name = f"tracked-{algorithm.replace('_', '-')}"
    with ParadigmClient(tracked.target, timeout=120) as client:
        job = client.start_training(
            dataset, algorithm, hyperparameters=hyperparameters, model_name=name, seed=7,
            test_fraction=0.3,
        )  # fmt: skip
        client.wait_for_job(job.id)
        model = client.get_model(name)
    assert model.mlflow_run_id
    run = mlflow_server.finished_run(model.mlflow_run_id)
    info, data = run["info"], run["data"]
    assert info["status"] == "FINISHED"
    assert info["run_name"] == f"{name}-{job.id}"

    params = _by_key(data["params"])
    for key, value in hyperparameters.items():
        assert params[key] == str(value)
    assert params["dataset"] == dataset
    assert params["seed"] == "7" and params["test_fraction"] == "0.3"

    tags = _by_key(data["tags"])
    assert tags["paradigm"] == paradigm and tags["algorithm"] == algorithm
    assert tags["device"] == "cpu"
    assert tags["dataset_fingerprint"] == model.dataset_fingerprint != ""
    assert tags["model"] == name and tags["model_version"] == model.version
    assert tags["job_id"] == job.id

    metrics = _by_key(data["metrics"])
    assert metrics[HELD_OUT[paradigm]] == pytest.approx(model.metrics[HELD_OUT[paradigm]])
    # The cost the job was priced at, as the model and the cost counters have it.
    cost = model.training_cost
    priced = {"device_seconds": cost.device_seconds, "joules": cost.joules, "dollars": cost.dollars}
    for key, value in priced.items():
        assert value > 0 and metrics[f"cost_{key}"] == pytest.approx(value), key
    if paradigm == "deep":
        for key in ("loss", "val_loss", "val_accuracy"):
            history = mlflow_server.get(
                "mlflow/metrics/get-history", run_id=model.mlflow_run_id, metric_key=key
            )["metrics"]
            assert sorted(point["step"] for point in history) == [1, 2, 3], key

    where = f"{info['experiment_id']}/{model.mlflow_run_id}/artifacts"
    listed = mlflow_server.get("mlflow-artifacts/artifacts", path=where)["files"]
    assert {f["path"] for f in listed} == {"model.onnx", "manifest.json"}
    artifacts = f"{mlflow_server.url}/api/2.0/mlflow-artifacts/artifacts/{where}"
    with urllib.request.urlopen(f"{artifacts}/model.onnx", timeout=30) as onnx:
        assert hashlib.sha256(onnx.read()).hexdigest() == model.checksum
    with urllib.request.urlopen(f"{artifacts}/manifest.json", timeout=30) as manifest:
        assert json.loads(manifest.read())["mlflow_run_id"] == model.mlflow_run_id

    shown = subprocess.run(
        [CLI, "--target", tracked.target, "models", "show", name],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "mlflow run" in shown.stdout and model.mlflow_run_id in shown.stdout


def test_a_cancelled_job_is_a_killed_run_with_its_epochs_and_cost(
    tracked: RunningServer, mlflow_server: MlflowServer
) -> None:
    with ParadigmClient(tracked.target, timeout=120) as client:
        job = client.start_training(
            "digits", "cnn", hyperparameters={"epochs": 1000}, model_name="tracked-cancel"
        )
        for event in client.watch_job(job.id):
            if event.stage == "epoch":
                break
        assert client.cancel_job(job.id).state == pb.JOB_STATE_CANCELLED
    [found] = mlflow_server.job_runs(job.id)
    run = mlflow_server.finished_run(found["info"]["run_id"])
    assert run["info"]["status"] == "KILLED"
    tags, metrics = _by_key(run["data"]["tags"]), _by_key(run["data"]["metrics"])
    assert tags["job_state"] == "cancelled" and "model_version" not in tags
    # Charged what the cost counters were charged (a killed worker reports no CPU time).
    assert "loss" in metrics and {"cost_device_seconds", "cost_dollars"} <= set(metrics)
    where = f"{run['info']['experiment_id']}/{run['info']['run_id']}/artifacts"
    assert mlflow_server.get("mlflow-artifacts/artifacts", path=where).get("files", []) == []


def test_a_tracking_server_that_is_down_fails_no_job(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    server = RunningServer(tmp_path / "data", mlflow_tracking_uri=nobody)
    try:
        with (
            caplog.at_level(logging.WARNING, logger="service.tracking"),
            ParadigmClient(server.target, timeout=120) as client,
        ):
            job = client.start_training("iris", "knn", model_name="untracked", seed=1)
            finished = client.wait_for_job(job.id)
            model = client.get_model("untracked")
        assert finished.state == pb.JOB_STATE_SUCCEEDED
        assert model.mlflow_run_id == ""
        failures = server.metrics_registry.get_sample_value(
            "paradigm_mlflow_failures_total", {"what": "run"}
        )
        assert failures == 1.0
        warned = [r.getMessage() for r in caplog.records if r.name.startswith("service.tracking")]
        assert any(job.id in line and "could not log the run" in line for line in warned), warned
    finally:
        server.stop()

"""Distributed (DDP) deep training through a real server, real torchrun and gloo ranks.

Two processes on this 2-core machine, iris and diabetes, a few epochs: every job here
pays torchrun's start-up (~5 s: the agent and each rank import torch), which dominates.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import load_iris

from clients.client import JobFailed, ParadigmClient, ParadigmClientError
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from service.registry.store import open_registry
from service.settings import Settings
from service.training.journal import JobJournal, JobRecord
from tests.server import RunningServer

EPOCHS = 8
# No dropout: then a 2-process job computes the very gradients of the 1-process job (the
# same global batches, each rank's loss weighted by its share of the batch), and the two
# differ only by float summation order. batch_size 15 does not divide by 2, and the 112
# training rows leave a last batch of 7: the uneven cases are exercised too.
MLP = {"epochs": EPOCHS, "batch_size": 15, "dropout": 0.0, "hidden_units": 32}


def _train(
    client: ParadigmClient, name: str, world_size: int, **params: object
) -> tuple[pb.Job, list[pb.JobEvent]]:
    events: list[pb.JobEvent] = []
    job = client.start_training(
        "iris",
        "mlp",
        hyperparameters={**MLP, **params},  # type: ignore[dict-item]
        model_name=name,
        seed=0,
        world_size=world_size,
    )
    assert job.world_size == max(1, world_size)
    return client.wait_for_job(job.id, on_event=events.append), events


def _stages(events: list[pb.JobEvent]) -> list[str]:
    """The stages in order, each run of one stage once (the stream's shape)."""
    stages: list[str] = []
    for event in events:
        if not stages or stages[-1] != event.stage:
            stages.append(event.stage)
    return stages


def _wait_ready(client: ParadigmClient, name: str) -> None:
    deadline = time.monotonic() + 30
    while not client.model_ready(name):
        assert time.monotonic() < deadline, f"{name} never became ready"
        time.sleep(0.1)


def test_two_processes_train_like_one_and_serve(client: ParadigmClient, tmp_path: Path) -> None:
    single, single_events = _train(client, "iris-mlp-one", 0)
    double, double_events = _train(client, "iris-mlp-ddp", 2)

    assert double.state == pb.JOB_STATE_SUCCEEDED and double.world_size == 2
    assert single.world_size == 1
    assert client.get_job(double.id).world_size == 2
    # The same stream as a single-process job: the same stages in the same order, one
    # epoch event per epoch in order, progress never going back, success last.
    assert _stages(double_events) == _stages(single_events)
    epochs = [e for e in double_events if e.stage == "epoch"]
    assert [e.epoch for e in epochs] == list(range(1, EPOCHS + 1))
    assert all(e.epochs == EPOCHS for e in epochs)
    progress = [e.progress for e in double_events]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert double_events[-1].state == pb.JOB_STATE_SUCCEEDED
    assert any("world_size 2" in e.message for e in double_events if e.stage == "fitting")
    # Rank 0's all-reduced training loss is the single process's, epoch for epoch.
    single_losses = [e.metrics["loss"] for e in single_events if e.stage == "epoch"]
    double_losses = [e.metrics["loss"] for e in epochs]
    assert double_losses == pytest.approx(single_losses, rel=1e-4)
    assert all("val_accuracy" in e.metrics for e in epochs)
    # Same gradients, so the same model up to rounding; iris is easy enough that both
    # clear 0.8 after 8 epochs, and rounding may flip a borderline test row or two.
    assert single.metrics["accuracy"] >= 0.8 and double.metrics["accuracy"] >= 0.8
    assert abs(single.metrics["accuracy"] - double.metrics["accuracy"]) <= 2 / 38

    model = client.get_model("iris-mlp-ddp")
    assert model.hyperparameters["world_size"].int_value == 2
    assert model.hyperparameters["distributed_backend"].string_value == "gloo"

    # It serves, and the served answers are those of its exported ONNX file.
    X = load_iris(return_X_y=True)[0].astype(np.float32)
    _wait_ready(client, "iris-mlp-ddp")
    served = client.infer("iris-mlp-ddp", X)
    path = tmp_path / "model.onnx"
    client.export_model("iris-mlp-ddp", path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"input": X})
    np.testing.assert_array_equal(served.as_numpy("label"), label)
    np.testing.assert_allclose(served.as_numpy("probabilities"), probabilities, atol=1e-6)


def _processes_of(job_id: str) -> list[str]:
    """Command lines of live processes that belong to the job's torchrun launch."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if job_id in command and "service.worker.distributed" in command:
            found.append(command)
    return found


def test_cancel_leaves_no_rank_behind(client: ParadigmClient) -> None:
    job = client.start_training(
        "iris", "mlp", hyperparameters={"epochs": 1000, "batch_size": 8}, world_size=2
    )
    for event in client.watch_job(job.id):
        if event.stage == "epoch":
            break
    assert _processes_of(job.id), "the ranks should be running while epochs are reported"
    cancelled = client.cancel_job(job.id)
    assert cancelled.state == pb.JOB_STATE_CANCELLED
    # The agent is killed at once and the ranks by PDEATHSIG; the kernel may take a moment.
    deadline = time.monotonic() + 10
    while (left := _processes_of(job.id)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left


@pytest.mark.parametrize(
    ("algorithm", "world_size", "expected"),
    [
        ("mlp", 5, "at most 4"),
        ("logistic_regression", 2, "world_size 2 needs a deep algorithm"),
        ("mlp", -1, "world_size -1 is negative"),
    ],
)
def test_world_size_is_validated(
    client: ParadigmClient, algorithm: str, world_size: int, expected: str
) -> None:
    with pytest.raises(ParadigmClientError) as error:
        client.start_training("iris", algorithm, world_size=world_size)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in error.value.details


def test_divergence_fails_with_the_ranks_message(client: ParadigmClient) -> None:
    job = client.start_training(
        "diabetes",
        "mlp",
        hyperparameters={"epochs": 3, "batch_size": 16, "optimizer": "sgd", "learning_rate": 1.0},
        world_size=2,
    )
    with pytest.raises(JobFailed) as failed:
        client.wait_for_job(job.id)
    assert failed.value.job.state == pb.JOB_STATE_FAILED
    assert failed.value.job.error.startswith("training diverged: loss is nan at epoch 1")


def test_paradigm_train_under_torchrun_publishes_a_servable_model(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "-m", "service.worker.standalone", "--dataset", "iris", "--algorithm", "mlp",
        "--model-name", "iris-mlp-torchrun", "--device", "cpu", "--epochs", "5",
        "--param", "batch_size=16", "--data-dir", str(data_dir),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "published iris-mlp-torchrun version 1" in done.stdout
    assert done.stdout.count("[epoch]") == 5  # rank 0 alone reports

    registry = open_registry(Settings(data_dir=data_dir), data_dir)
    try:
        manifest = registry.get("iris-mlp-torchrun")
    finally:
        registry.close()
    assert manifest.hyperparameters["world_size"] == 2
    assert manifest.metrics["accuracy"] >= 0.8

    server = RunningServer(data_dir)
    try:
        with ParadigmClient(server.target, timeout=60) as client:
            client.wait_until_ready(30)
            _wait_ready(client, "iris-mlp-torchrun")
            X = load_iris(return_X_y=True)[0].astype(np.float32)
            labels = client.infer("iris-mlp-torchrun", X).as_numpy("label")
            assert labels.shape == (150,)
    finally:
        server.stop()


def test_journal_keeps_world_size_and_upgrades_an_old_file(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    # A version-1 journal: no world_size column.
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, model_name TEXT NOT "
            "NULL, dataset TEXT NOT NULL, algorithm TEXT NOT NULL, paradigm TEXT NOT NULL, "
            "task TEXT NOT NULL, hyperparameters TEXT NOT NULL, state TEXT NOT NULL, error "
            "TEXT NOT NULL, model_version TEXT NOT NULL, progress REAL NOT NULL, metrics TEXT "
            "NOT NULL, device TEXT NOT NULL, created_at TEXT NOT NULL, started_at TEXT, "
            "finished_at TEXT)"
        )
        db.execute(
            "INSERT INTO jobs VALUES ('old', 'train', 'm', 'iris', 'mlp', 'deep', "
            "'classification', '{}', 'succeeded', '', '1', 1.0, '{}', 'cpu', "
            "'2025-01-01T00:00:00+00:00', NULL, NULL)"
        )
    db.close()
    journal = JobJournal(path)
    journal.save(JobRecord(id="new", kind="train", model_name="m", world_size=2), durable=True)
    loaded = {job.id: job for job in journal.load(lambda **fields: JobRecord(**fields))}
    journal.close()
    assert loaded["old"].world_size == 1
    assert loaded["new"].world_size == 2


def test_a_rank_killed_without_a_word_is_named_from_torchruns_report(tmp_path: Path) -> None:
    from service.worker import distributed

    (tmp_path / distributed.LOG_FILE).write_text(
        "terminate called without an active exception\n"
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n"
        "=======================================================\n"
        "Root Cause (first observed failure):\n[0]:\n"
        "  time      : 2026-11-24_21:53:19\n  host      : localhost\n"
        "  rank      : 1 (local_rank: 1)\n  exitcode  : -6 (pid: 20490)  (SIGABRT)\n"
        "  error_file: <N/A>\n  traceback : Signal 6 (SIGABRT) received by PID 20490\n"
        "=======================================================\n"
    )
    assert distributed.failure_reason(tmp_path, 1) == (
        "distributed training failed: torchrun exited with code 1: rank: 1 (local_rank: 1); "
        "exitcode: -6 (pid: 20490) (SIGABRT); traceback: Signal 6 (SIGABRT) received by PID "
        "20490"
    )
    # A rank's own words come first.
    (tmp_path / "error-1.txt").write_text("training diverged: loss is nan at epoch 1")
    assert distributed.failure_reason(tmp_path, 1) == "training diverged: loss is nan at epoch 1"

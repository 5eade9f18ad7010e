"""Learning-curve training sizes and the Explain RPC, against a real server.

The session server (tests/conftest.py) trains and explains; one paradigm-server process of
its own checks that explaining keeps scikit-learn and torch out of the serving process and
that waiting explanations are bounded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from clients.client import ParadigmClient, ParadigmClientError
from clients.harness import paradigm_server
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from tests.server import RunningServer
from tests.test_server_process import mapped_libraries

PETAL = ("petal length (cm)", "petal width (cm)")


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(ParadigmClientError) as caught:
        call()
    return caught.value.code


def train(client: ParadigmClient, dataset: str, algorithm: str, name: str, **kwargs: Any) -> pb.Job:
    job = client.start_training(dataset, algorithm, model_name=name, seed=0, **kwargs)
    return client.wait_for_job(job.id)


def spawned_children() -> list[int]:
    """This process's live children started by multiprocessing's spawn (workers)."""
    pids = [
        int(pid)
        for task in Path("/proc/self/task").iterdir()
        for pid in (task / "children").read_text().split()
    ]
    found = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline and state != "Z":
            found.append(pid)
    return found


def check_explanation(e: pb.Explanation, n_features: int) -> None:
    """What holds for every explanation: one entry per feature, sorted, priced."""
    assert len(e.features) == n_features
    assert len({f.feature for f in e.features}) == n_features
    means = [f.importance_mean for f in e.features]
    assert means == sorted(means, reverse=True)
    assert all(f.importance_std >= 0 for f in e.features)
    assert e.rows > 1 and e.seconds > 0
    assert e.cost.device_seconds > 0 and e.cost.dollars > 0 and e.cost.energy_source


# --------------------------------------------------------------------------- train_size


def test_train_size_shrinks_the_training_split_only(
    client: ParadigmClient, iris_model: str
) -> None:
    full = client.get_model(iris_model)
    small = train(client, "iris", "logistic_regression", "iris-lr-30", train_size=30)
    assert full.metrics["train_samples"] == 112 and small.metrics["train_samples"] == 30
    assert small.metrics["test_samples"] == full.metrics["test_samples"] == 38
    assert small.metrics["train_size"] == 30 and "train_size" not in full.metrics
    # Stratified: all three classes kept their place in the model.
    model = client.get_model("iris-lr-30")
    assert [list(o.shape) for o in model.outputs] == [[-1], [-1, 3]]
    assert model.metrics["train_size"] == 30
    # Larger than the split: all of it.
    everything = train(client, "iris", "logistic_regression", "iris-lr-all", train_size=10_000)
    assert everything.metrics["train_samples"] == 112


@pytest.mark.parametrize(
    ("dataset", "algorithm", "train_size"),
    [("iris", "logistic_regression", -1), ("iris", "logistic_regression", 2),
     ("digits", "random_forest", 9), ("diabetes", "ridge", 1)],
)  # fmt: skip
def test_impossible_train_sizes_are_refused_up_front(
    client: ParadigmClient, dataset: str, algorithm: str, train_size: int
) -> None:
    start = lambda: client.start_training(dataset, algorithm, train_size=train_size)  # noqa: E731
    assert code_of(start) == grpc.StatusCode.INVALID_ARGUMENT


# --------------------------------------------------------------------------- Explain


def test_logistic_regression_leans_on_petals(client: ParadigmClient, iris_model: str) -> None:
    e = client.explain(iris_model)
    check_explanation(e, 4)
    assert e.model.name == iris_model and e.dataset == "iris"
    assert e.metric == "accuracy" and e.baseline_score > 0.8
    assert e.rows == 38  # the training job's held-out rows
    assert e.native_kind == "coefficients"
    assert all(f.HasField("native") and f.native > 0 for f in e.features)
    # Both views agree that a petal measurement matters most, and shuffling either petal
    # feature costs more accuracy than shuffling sepal width.
    assert e.features[0].feature in PETAL
    by_native = sorted(e.features, key=lambda f: f.native, reverse=True)
    assert by_native[0].feature in PETAL
    petal = min(f.importance_mean for f in e.features if f.feature in PETAL)
    sepal_width = next(f for f in e.features if f.feature == "sepal width (cm)")
    assert petal > sepal_width.importance_mean
    # Same seed, same answer.
    again = client.explain(iris_model, n_repeats=5, seed=0)
    assert [(f.feature, f.importance_mean) for f in again.features] == [
        (f.feature, f.importance_mean) for f in e.features
    ]


def test_explaining_is_charged_to_the_explain_phase(
    server: RunningServer, client: ParadigmClient, iris_model: str
) -> None:
    def spent() -> float:
        value = server.metrics_registry.get_sample_value(
            "paradigm_device_seconds_total",
            {"phase": "explain", "paradigm": "classical", "model": iris_model,
             "version": "1", "algorithm": "logistic_regression", "device": "cpu"},
        )  # fmt: skip
        return value or 0.0

    before = spent()
    e = client.explain(iris_model, n_repeats=2)
    assert spent() - before == pytest.approx(e.cost.device_seconds)


def test_random_forest_reports_impurity_importances(client: ParadigmClient) -> None:
    train(client, "iris", "random_forest", "iris-rf-explain", hyperparameters={"n_estimators": 10})
    e = client.explain("iris-rf-explain", n_repeats=3)
    check_explanation(e, 4)
    assert e.native_kind == "feature_importances"
    assert sum(f.native for f in e.features) == pytest.approx(1.0)
    assert e.features[0].feature in PETAL


def test_regression_is_scored_by_r2_on_a_sample_of_another_dataset(
    client: ParadigmClient, tmp_path: Path
) -> None:
    train(client, "diabetes", "ridge", "diabetes-ridge-explain")
    e = client.explain("diabetes-ridge-explain", n_repeats=2)
    check_explanation(e, 10)
    assert e.metric == "r2" and e.native_kind == "coefficients"
    # Another dataset with the model's 10 features: a seeded sample of it, capped.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 10)).astype(np.float32) * 0.05
    np.savez(tmp_path / "d.npz", X=X, y=rng.normal(150, 50, 300))
    client.upload_dataset("diabetes-like", tmp_path / "d.npz", task="regression")
    other = client.explain("diabetes-ridge-explain", dataset="diabetes-like", max_rows=100)
    assert other.dataset == "diabetes-like" and other.rows == 100
    # Features are the model's inputs: named as in its training dataset.
    assert {f.feature for f in other.features} == {f.feature for f in e.features}


def test_mlp_has_only_permutation_importance(client: ParadigmClient) -> None:
    params = {"epochs": 5, "batch_size": 64}
    train(client, "wine", "mlp", "wine-mlp-explain", hyperparameters=params, device="cpu")
    e = client.explain("wine-mlp-explain", n_repeats=2)
    check_explanation(e, 13)
    assert e.native_kind == ""
    assert not any(f.HasField("native") for f in e.features)


def test_cnn_is_explained_per_pixel(client: ParadigmClient) -> None:
    params = {"epochs": 1, "batch_size": 64}
    train(client, "digits", "cnn", "digits-cnn-explain", hyperparameters=params, device="cpu")
    e = client.explain("digits-cnn-explain", n_repeats=1, max_rows=200)
    check_explanation(e, 64)
    assert e.rows == 200 and e.native_kind == ""
    # The top-left pixel is blank in every digit: shuffling a column of zeros changes nothing.
    corner = next(f for f in e.features if f.feature == "pixel_0_0")
    assert corner.importance_mean == 0.0 and corner.importance_std == 0.0


def test_explain_errors(client: ParadigmClient, iris_model: str) -> None:
    invalid, missing = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: client.explain("no-such-model")) == missing
    assert code_of(lambda: client.explain(iris_model, version="999")) == missing
    assert code_of(lambda: client.explain(iris_model, dataset="no-such-dataset")) == missing
    assert code_of(lambda: client.explain(iris_model, dataset="wine")) == invalid  # 13 != 4
    out_of_range: dict[str, Callable[[], object]] = {
        "n_repeats=-1": lambda: client.explain(iris_model, n_repeats=-1),
        "max_rows=-1": lambda: client.explain(iris_model, max_rows=-1),
        "n_repeats=101": lambda: client.explain(iris_model, n_repeats=101),
        "max_rows=100_001": lambda: client.explain(iris_model, max_rows=100_001),
        "seed=-1": lambda: client.explain(iris_model, seed=-1),
    }
    for arguments, explain in out_of_range.items():
        assert code_of(explain) == invalid, arguments


def test_anomaly_detectors_have_nothing_to_explain(client: ParadigmClient) -> None:
    params = {"epochs": 1}
    train(client, "iris", "autoencoder", "iris-ae-explain", hyperparameters=params, device="cpu")
    with pytest.raises(ParadigmClientError) as caught:
        client.explain("iris-ae-explain")
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "anomaly" in caught.value.details


@pytest.mark.parametrize("timeout", [1.0, 0.3])
def test_a_passed_deadline_stops_the_worker(
    client: ParadigmClient, server: RunningServer, timeout: float
) -> None:
    if not client.list_models("digits-rf-explain"):
        train(client, "digits", "random_forest", "digits-rf-explain",
              hyperparameters={"n_estimators": 50})  # fmt: skip
    with ParadigmClient(server.target, timeout=timeout) as hasty:
        started = time.monotonic()
        slow = lambda: hasty.explain("digits-rf-explain", n_repeats=100, max_rows=100_000)  # noqa: E731
        assert code_of(slow) == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 5
    # The server runs in this process, so its explain worker was this process's child (and
    # no training job runs now): no spawned child may be left.
    deadline = time.monotonic() + 10
    while spawned_children():
        assert time.monotonic() < deadline, "the explain worker outlived its deadline"
        time.sleep(0.05)
    # The worker was ended, its slot given back and its pipe unregistered from the event
    # loop (a cancelled call once left the next one deaf to its worker): the next runs.
    with ParadigmClient(server.target, timeout=30) as patient:
        e = patient.explain("digits-rf-explain", n_repeats=1, max_rows=100)
    check_explanation(e, 64)


# --------------------------------------------------------------------------- serving process


def test_explaining_keeps_sklearn_and_torch_out_of_the_server(tmp_path: Path) -> None:
    # None may wait: a second explanation while one runs is refused at once.
    env = {"PARADIGM_MAX_QUEUED_EXPLAINS": "0"}
    with paradigm_server(tmp_path, "server", tmp_path / "data", env=env, metrics=False) as server:
        with ParadigmClient(server.target, timeout=120) as client:
            client.wait_until_ready(30)
            train(client, "iris", "logistic_regression", "iris-lr")
            first: list[pb.Explanation] = []
            running = threading.Thread(
                target=lambda: first.append(client.explain("iris-lr", n_repeats=100))
            )
            running.start()
            time.sleep(0.5)  # well inside the worker's start (it imports scikit-learn)
            second = lambda: client.explain("iris-lr")  # noqa: E731
            assert code_of(second) == grpc.StatusCode.RESOURCE_EXHAUSTED
            running.join(120)
            assert first and first[0].features[0].feature in PETAL
        maps = mapped_libraries(server.pid)
        assert "onnxruntime" in maps  # the check can see native libraries at all
        assert "libtorch" not in maps and "/sklearn/" not in maps

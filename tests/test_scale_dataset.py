"""The digits_scaled generator: in process (shape, balance, determinism, learnable) and
through the real server (GenerateDataset, then a CNN trains on the result)."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from clients.client import ParadigmClient, ParadigmClientError
from service.datasets.layout import DatasetInfo, load_arrays, read_info
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from service.worker.datasets import scale
from tests.server import RunningServer


def make(root: Path, name: str, n_samples: int, seed: int = 0, image_size: int = 28) -> DatasetInfo:
    return scale.generate(
        root,
        name=name,
        generator="digits_scaled",
        n_samples=n_samples,
        image_size=image_size,
        seed=seed,
    )


def test_rows_are_balanced_images_in_range(tmp_path: Path) -> None:
    info = make(tmp_path, "scaled", 1000, seed=3)
    X, y = load_arrays(tmp_path / "scaled")
    assert X.shape == (1000, 784) and X.dtype == np.float32
    assert y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
    assert np.all(np.bincount(y, minlength=10) == 100)
    assert X.min() >= 0.0 and X.max() <= 1.0 and np.isfinite(X).all()
    assert (info.n_samples, info.n_features, info.n_classes) == (1000, 784, 10)
    assert info.task == "classification" and info.image_shape == [28, 28] and not info.builtin
    assert "seed 3" in info.description and "28x28" in info.description
    assert read_info(tmp_path / "scaled") == info


def test_digits_land_at_random_places_with_noise(tmp_path: Path) -> None:
    X, _ = scale.digits_scaled(400, 28, seed=0)
    images = X.reshape(-1, 28, 28)
    ink = np.where(images > 0.5, images, 0.0)  # strokes, not the noise
    rows = np.arange(28)
    centre_row = (ink.sum(axis=2) @ rows) / ink.sum(axis=(1, 2))
    centre_col = (ink.sum(axis=1) @ rows) / ink.sum(axis=(1, 2))
    assert centre_row.std() > 1.0 and centre_col.std() > 1.0  # shifted, not all centred
    # Gaussian noise: most background pixels are not exactly zero, about half (clipped) are.
    assert 0.3 < np.mean(images[:, 0, :] > 0) < 0.7


def test_same_seed_same_data_other_seed_other_data(tmp_path: Path) -> None:
    # 2 500 rows span two chunks of the generator.
    first = make(tmp_path, "first", 2500, seed=11)
    again = make(tmp_path, "again", 2500, seed=11)
    other = make(tmp_path, "other", 2500, seed=12)
    assert first.fingerprint == again.fingerprint
    assert other.fingerprint != first.fingerprint


def test_one_row_other_sizes_and_negative_seeds(tmp_path: Path) -> None:
    one = make(tmp_path, "one", 1)
    assert (one.n_samples, one.n_features) == (1, 784)
    small = make(tmp_path, "small", 20, image_size=16, seed=-5)
    assert small.n_features == 256 and small.image_shape == [16, 16]
    with pytest.raises(ValueError, match="digits_scaled"):
        scale.generate(tmp_path, name="x", generator="mnist", n_samples=5, image_size=28, seed=0)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 50 steps do
def test_a_linear_model_learns_it(tmp_path: Path) -> None:
    X, y = scale.digits_scaled(2500, 28, seed=5)
    # One BLAS thread: threads spinning against the server's workers on two cores made
    # this fit take 8 s instead of 0.3 s.
    with threadpool_limits(1):
        model = LogisticRegression(max_iter=50).fit(X[:2000], y[:2000])
    # Chance is 0.1; measured ~0.53 with shifts this large for a linear model.
    assert model.score(X[2000:], y[2000:]) > 0.3


def test_generate_through_the_server_then_train_a_cnn(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data")
    try:
        with ParadigmClient(server.target, timeout=120) as client:
            client.wait_until_ready(30)
            dataset = client.generate_dataset("scaled", 3000, seed=7)
            assert (dataset.n_samples, dataset.n_features, dataset.n_classes) == (3000, 784, 10)
            assert list(dataset.image_shape) == [28, 28] and not dataset.builtin
            assert dataset.task == pb.TASK_CLASSIFICATION and "seed 7" in dataset.description
            listed = {d.name: d for d in client.list_datasets()}
            assert listed["scaled"].fingerprint == dataset.fingerprint

            job = client.start_training(
                "scaled",
                "cnn",
                hyperparameters={"epochs": 1, "filters_1": 4, "filters_2": 8, "batch_size": 64},
                seed=0,
            )
            job = client.wait_for_job(job.id)
            assert job.metrics["accuracy"] > 0.2  # one epoch of a tiny CNN; chance is 0.1

            for name, n_samples, code in [
                ("empty", 0, grpc.StatusCode.INVALID_ARGUMENT),
                ("huge", 300_000, grpc.StatusCode.INVALID_ARGUMENT),
                ("scaled", 10, grpc.StatusCode.ALREADY_EXISTS),
            ]:
                with pytest.raises(ParadigmClientError) as error:
                    client.generate_dataset(name, n_samples)
                assert error.value.code == code, error.value
    finally:
        server.stop()

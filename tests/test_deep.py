"""deep.fit in-process: every algorithm trains, exports and answers like its ONNX model.

Tiny networks and one or two epochs on small data keep the file fast on two cores; the
numbers that matter (accuracy with the guide's defaults) are measured outside the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.datasets import load_diabetes, load_digits, load_iris

from service.worker import deep
from service.worker.fitting import FitRequest

COMMON: dict[str, Any] = {
    "epochs": 2,
    "batch_size": 64,
    "learning_rate": 1e-3,
    "optimizer": "rmsprop",
    "validation_split": 0.25,
}
SMALL: dict[str, dict[str, Any]] = {
    "mlp": {"hidden_units": 16, "hidden_layers": 2, "dropout": 0.2},
    "cnn": {"filters_1": 8, "filters_2": 16, "kernel_size": 3, "dropout": 0.5},
    "lstm": {"hidden_units": 16, "num_layers": 2, "dropout": 0.1},
    "autoencoder": {"hidden_units": 16, "bottleneck_units": 4},
}
# (algorithm, task, dataset): each architecture and each kind of head at least once.
CASES = [
    ("mlp", "classification", "iris"),
    ("mlp", "regression", "diabetes"),
    ("cnn", "classification", "digits"),
    ("lstm", "classification", "digits"),
    ("lstm", "regression", "diabetes"),
    ("autoencoder", "anomaly_detection", "digits"),
]
OUTPUTS: dict[str, dict[str, type]] = {
    "classification": {"label": np.int64, "probabilities": np.float32},
    "regression": {"prediction": np.float32},
    "anomaly_detection": {"reconstruction": np.float32, "score": np.float32},
}


@dataclass
class Dataset:
    X: np.ndarray
    y: np.ndarray
    image_shape: list[int] | None = None

    @property
    def classes(self) -> np.ndarray:
        return np.unique(self.y).astype(np.int64)


def _load(name: str) -> Dataset:
    if name == "digits":
        X, y = load_digits(return_X_y=True)
        return Dataset(X[:300].astype(np.float32), y[:300].astype(np.int64), [8, 8])
    if name == "iris":
        X, y = load_iris(return_X_y=True)
        return Dataset(X.astype(np.float32), y.astype(np.int64))
    X, y = load_diabetes(return_X_y=True)
    return Dataset(X[:200].astype(np.float32), y[:200].astype(np.float64))


DATA = {name: _load(name) for name in ("digits", "iris", "diabetes")}


@dataclass
class Recorder:
    """An Emit that keeps every call."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, stage: str, message: str = "", **kwargs: Any) -> None:
        self.calls.append((stage, kwargs))


def _fit(
    algorithm: str,
    task: str,
    dataset: str,
    *,
    seed: int = 0,
    emit: Recorder | None = None,
    **overrides: Any,
) -> deep.DeepModel:
    data = DATA[dataset]
    return deep.fit(
        FitRequest(
            algorithm,
            {**COMMON, **SMALL[algorithm], **overrides},
            data.X,
            data.y,
            task=task,
            seed=seed,
            emit=emit or Recorder(),
            device="cpu",
            image_shape=data.image_shape,
            classes=data.classes if task == "classification" else None,
        )
    )


@pytest.fixture(scope="module")
def fitted() -> dict[tuple[str, str, str], tuple[deep.DeepModel, Recorder, bytes]]:
    """Each case trained and exported once, shared by the tests below."""
    models = {}
    for case in CASES:
        recorder = Recorder()
        model = _fit(*case, emit=recorder)
        models[case] = (model, recorder, model.to_onnx(DATA[case[2]].X.shape[1]))
    return models


def _run_onnx(onnx_bytes: bytes, X: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, {"input": X}), strict=True))


@pytest.mark.parametrize("case", CASES, ids=["-".join(case) for case in CASES])
def test_outputs_have_the_promised_names_dtypes_and_shapes(
    fitted: dict[tuple[str, str, str], tuple[deep.DeepModel, Recorder, bytes]],
    case: tuple[str, str, str],
) -> None:
    model, _, _ = fitted[case]
    data = DATA[case[2]]
    outputs = model.predict_outputs(data.X[:5])
    expected = OUTPUTS[case[1]]
    assert set(outputs) == set(expected)
    for name, dtype in expected.items():
        assert outputs[name].dtype == dtype, name
        assert outputs[name].shape[0] == 5, name
    if case[1] == "classification":
        assert outputs["probabilities"].shape == (5, len(data.classes))
        np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1.0, atol=1e-5)
        argmax = np.argmax(outputs["probabilities"], axis=1)
        np.testing.assert_array_equal(outputs["label"], data.classes[argmax])
    elif case[1] == "regression":
        assert outputs["prediction"].shape == (5, 1)
    else:
        assert outputs["reconstruction"].shape == (5, data.X.shape[1])
        # The score is the reconstruction error in the original feature units.
        error = np.mean((outputs["reconstruction"] - data.X[:5]) ** 2, axis=1)
        np.testing.assert_allclose(outputs["score"], error, rtol=1e-5)
    assert model.device == "cpu"
    assert model.parameter_count > 0
    assert model.preprocessing_seconds >= 0


@pytest.mark.parametrize("case", CASES, ids=["-".join(case) for case in CASES])
def test_onnx_matches_torch_at_any_batch_size(
    fitted: dict[tuple[str, str, str], tuple[deep.DeepModel, Recorder, bytes]],
    case: tuple[str, str, str],
) -> None:
    model, _, onnx_bytes = fitted[case]
    onnx.checker.check_model(onnx.load_from_string(onnx_bytes))
    X = DATA[case[2]].X
    for batch in (1, 7, len(X)):
        native = model.predict_outputs(X[:batch])
        exported = _run_onnx(onnx_bytes, X[:batch])
        assert set(exported) == set(native)
        for name, value in native.items():
            assert exported[name].dtype == value.dtype, name
            assert exported[name].shape == value.shape, name
            # Regression and reconstructions are in original units (diabetes targets are
            # ~100), so compare relative to the output's scale.
            scale = max(1.0, float(np.max(np.abs(value))))
            np.testing.assert_allclose(exported[name], value, atol=1e-4 * scale, err_msg=name)
        if "label" in exported:
            argmax = np.argmax(exported["probabilities"], axis=1)
            np.testing.assert_array_equal(exported["label"], DATA[case[2]].classes[argmax])


@pytest.mark.parametrize("case", CASES, ids=["-".join(case) for case in CASES])
def test_every_epoch_is_reported_with_its_losses(
    fitted: dict[tuple[str, str, str], tuple[deep.DeepModel, Recorder, bytes]],
    case: tuple[str, str, str],
) -> None:
    model, recorder, _ = fitted[case]
    epochs = [kwargs for stage, kwargs in recorder.calls if stage == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(e["epochs"] == 2 for e in epochs)
    progress = [e["progress"] for e in epochs]
    assert 0.1 <= progress[0] < progress[1] == pytest.approx(0.8)
    for event in epochs:
        metrics = event["metrics"]
        assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["val_loss"])
        if case[1] == "classification":
            assert 0.0 <= metrics["val_accuracy"] <= 1.0
        if case[1] == "regression":
            assert metrics["val_rmse"] > 0
    assert model.history == [e["metrics"] for e in epochs]


def test_no_validation_split_means_training_loss_only() -> None:
    recorder = Recorder()
    _fit("mlp", "classification", "iris", emit=recorder, epochs=1, validation_split=0.0)
    stages = [stage for stage, _ in recorder.calls]
    assert stages == ["fitting", "epoch"]
    assert recorder.calls[0][1]["device"] == "cpu"
    assert set(recorder.calls[1][1]["metrics"]) == {"loss", "epoch_seconds"}


@pytest.mark.parametrize("algorithm", ["mlp", "cnn", "lstm"])
def test_same_seed_gives_identical_weights(algorithm: str) -> None:
    X = DATA["digits"].X
    first = _fit(algorithm, "classification", "digits", seed=3, epochs=1)
    second = _fit(algorithm, "classification", "digits", seed=3, epochs=1)
    other = _fit(algorithm, "classification", "digits", seed=4, epochs=1)
    weights, again = first.head.state_dict(), second.head.state_dict()
    assert weights.keys() == again.keys()
    for name, value in weights.items():
        np.testing.assert_array_equal(value.numpy(), again[name].numpy(), err_msg=name)
    probabilities = first.predict_outputs(X)["probabilities"]
    np.testing.assert_array_equal(probabilities, second.predict_outputs(X)["probabilities"])
    assert not np.array_equal(probabilities, other.predict_outputs(X)["probabilities"])


def test_cnn_without_an_image_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="cnn needs an image dataset"):
        _fit("cnn", "classification", "iris")


def test_supervised_networks_refuse_anomaly_detection() -> None:
    with pytest.raises(ValueError, match="classification or regression"):
        _fit("mlp", "anomaly_detection", "iris")


@pytest.mark.skipif(deep.cuda_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda_is_a_clear_error() -> None:
    data = DATA["iris"]
    with pytest.raises(ValueError, match=r"device cuda requested .* is False"):
        deep.fit(
            FitRequest(
                "mlp",
                {**COMMON, **SMALL["mlp"]},
                data.X,
                data.y,
                task="classification",
                seed=0,
                emit=Recorder(),
                device="cuda",
            )
        )


@pytest.mark.gpu
@pytest.mark.skipif(not deep.cuda_available(), reason="needs a CUDA GPU")
def test_trains_on_cuda_and_exports_from_the_cpu_copy() -> None:
    data = DATA["digits"]
    model = deep.fit(
        FitRequest(
            "cnn",
            {**COMMON, **SMALL["cnn"]},
            data.X,
            data.y,
            task="classification",
            seed=0,
            emit=Recorder(),
            device="auto",
            image_shape=data.image_shape,
            classes=data.classes,
        )
    )
    assert model.device == "cuda"
    native = model.predict_outputs(data.X)
    exported = _run_onnx(model.to_onnx(data.X.shape[1]), data.X)
    np.testing.assert_allclose(exported["probabilities"], native["probabilities"], atol=1e-4)

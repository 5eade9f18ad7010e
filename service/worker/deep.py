"""The PyTorch side of training: build, fit and export the deep networks.

Four algorithms: `mlp`, `cnn` (the guide's Keras CNN), `lstm` and `autoencoder`. `fit` trains
one and returns a `DeepModel` (the `FittedModel` protocol of spec.py) whose `to_onnx` gives a
self-contained ONNX model taking raw features, and whose `predict_outputs` returns exactly
what that ONNX model returns, so the pipeline's parity check compares like with like.

Only training worker processes import this module: torch costs the serving process 1.5 s of
start-up and ~190 MiB, so nothing outside service/training/deep.py (and the DDP ranks of
service/training/distributed.py) imports torch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from service.training.spec import Emit

ALGORITHMS = ("mlp", "cnn", "lstm", "autoencoder")
SUPERVISED_TASKS = ("classification", "regression")

# Keras's RMSprop defaults. torch's own RMSprop defaults (lr 1e-2, alpha 0.99, eps 1e-8) were
# measured unstable on digits with the guide's CNN (held-out accuracy 0.32-0.86 by seed).
_RMSPROP_ALPHA = 0.9
_KERAS_EPSILON = 1e-7
# Features whose training spread is below this are treated as constant (scale 1, like
# scikit-learn's StandardScaler), so a rare non-zero value at serving time stays finite.
_MIN_STD = 1e-6
# Inference (validation, predict_outputs) runs in chunks of rows: the CNN's first activation
# is 64 channels per pixel, ~200 MB for 1024 MNIST-sized rows and 17x that for a whole
# 25% validation split of MNIST.
_CHUNK = 1024
# Epoch progress spans this part of the job; loading/evaluation/export own the rest.
_PROGRESS_FIRST, _PROGRESS_LAST = 0.1, 0.8


def cuda_available() -> bool:
    """Whether torch can train on a CUDA device here (lets tests ask without importing torch)."""
    return bool(torch.cuda.is_available())


def cuda_device_count() -> int:
    """GPUs torch can use here (0 without CUDA)."""
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def resolve_device(device: str) -> str:
    """Maps "auto" to cuda when torch sees one, else cpu; a missing cuda is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device cuda requested but torch.cuda.is_available() is False")
        return "cuda"
    if device == "cpu":
        return "cpu"
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")


# --------------------------------------------------------------------------- networks


class _Standardize(nn.Module):
    """Per-feature (x - mean) / std with the training statistics held as buffers.

    Living inside the network, the statistics are exported with it: the ONNX graph takes
    raw features and serving needs no separate scaler.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class _MLP(nn.Module):
    def __init__(
        self, n_features: int, n_out: int, hidden_units: int, hidden_layers: int, dropout: float
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden_units), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden_units
        layers.append(nn.Linear(width, n_out))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _CNN(nn.Module):
    """The guide's Keras CNN: two conv(tanh)+maxpool blocks, dropout, one dense layer.

    "same" padding keeps each conv's output the size of its input, so an 8x8 digit goes
    8 -> 4 -> 2 through the two poolings (the guide's 28x28 MNIST layout would too).
    """

    def __init__(
        self,
        image_shape: tuple[int, int],
        n_out: int,
        filters_1: int,
        filters_2: int,
        kernel_size: int,
        dropout: float,
    ) -> None:
        super().__init__()
        height, width = image_shape
        if height < 4 or width < 4:
            raise ValueError(
                f"cnn needs images of at least 4x4 (two 2x2 poolings), got {height}x{width}"
            )
        self.image_shape = (height, width)
        self.features = nn.Sequential(
            nn.Conv2d(1, filters_1, kernel_size, padding="same"),
            nn.Tanh(),
            nn.MaxPool2d(2),
            nn.Conv2d(filters_1, filters_2, kernel_size, padding="same"),
            nn.Tanh(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(filters_2 * (height // 4) * (width // 4), n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.image_shape
        return self.head(self.features(x.reshape(-1, 1, height, width)))


class _LSTM(nn.Module):
    """Reads a row as a sequence and classifies/regresses from the last hidden state.

    Image rows are the time steps of an image (seq_len = H, W features per step); any
    other row is a sequence of its features, one value per step.
    """

    def __init__(
        self,
        seq_len: int,
        step_features: int,
        n_out: int,
        hidden_units: int,
        num_layers: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.seq_len, self.step_features = seq_len, step_features
        # torch applies LSTM dropout only between stacked layers (and warns when there is
        # one layer); dropping the final hidden state as well makes the setting count for a
        # single-layer LSTM too.
        self.lstm = nn.LSTM(
            step_features,
            hidden_units,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_units, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sequence, _ = self.lstm(x.reshape(-1, self.seq_len, self.step_features))
        return self.head(self.dropout(sequence[:, -1, :]))


class _Autoencoder(nn.Module):
    def __init__(self, n_features: int, hidden_units: int, bottleneck_units: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(n_features, hidden_units),
            nn.ReLU(),
            nn.Linear(hidden_units, bottleneck_units),
            nn.ReLU(),
            nn.Linear(bottleneck_units, hidden_units),
            nn.ReLU(),
            nn.Linear(hidden_units, n_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _Network(nn.Module):
    """Standardization followed by the body; maps raw features to model-space outputs.

    Model space: logits (classification), the standardized target (regression) or the
    standardized reconstruction (autoencoder).
    """

    def __init__(self, scaler: _Standardize, body: nn.Module) -> None:
        super().__init__()
        self.scaler = scaler
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.scaler(x))


class _ClassifierHead(nn.Module):
    """Outputs (label INT64 [batch], probabilities FP32 [batch, n_classes])."""

    classes: torch.Tensor

    def __init__(self, network: _Network, classes: np.ndarray) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("classes", torch.as_tensor(classes, dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.softmax(self.network(x), dim=1)
        # index_select exports as a plain ONNX Gather on the classes constant.
        label = torch.index_select(self.classes, 0, torch.argmax(probabilities, dim=1))
        return label, probabilities


class _RegressorHead(nn.Module):
    """Outputs prediction FP32 [batch, 1] in the target's original units."""

    y_mean: torch.Tensor
    y_std: torch.Tensor

    def __init__(self, network: _Network, y_mean: float, y_std: float) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("y_mean", torch.tensor(y_mean, dtype=torch.float32))
        self.register_buffer("y_std", torch.tensor(y_std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.network(x) * self.y_std + self.y_mean,)


class _AnomalyHead(nn.Module):
    """Outputs reconstruction FP32 [batch, n_features] and score FP32 [batch].

    Both in the original feature units, so a score threshold means the same thing
    whatever the scaling learned in training.
    """

    def __init__(self, network: _Network) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scaler = self.network.scaler
        reconstruction = self.network(x) * scaler.std + scaler.mean
        score = torch.mean((reconstruction - x) ** 2, dim=1)
        return reconstruction, score


_OUTPUT_NAMES = {
    "classification": ("label", "probabilities"),
    "regression": ("prediction",),
    "anomaly_detection": ("reconstruction", "score"),
}


# --------------------------------------------------------------------------- fitted model


@dataclass
class DeepModel:
    """A trained network as the pipeline sees it (spec.FittedModel), kept on the CPU."""

    algorithm: str
    task: str
    head: nn.Module
    parameter_count: int
    device: str
    preprocessing_seconds: float
    classes: np.ndarray | None = None
    #: torch intra-op threads for predict_outputs and to_onnx, as in training.
    threads: int = 1
    #: One dict of metrics per epoch, as emitted.
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def output_names(self) -> tuple[str, ...]:
        return _OUTPUT_NAMES[self.task]

    def predict_outputs(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """The torch model's outputs for raw rows X, named and typed as the ONNX model's."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2:
            X = X.reshape(len(X), -1)
        self.head.eval()
        chunks: list[tuple[np.ndarray, ...]] = []
        with _torch_threads(self.threads), torch.inference_mode():
            for start in range(0, len(X), _CHUNK):
                outputs = self.head(torch.from_numpy(X[start : start + _CHUNK]))
                chunks.append(tuple(t.numpy() for t in outputs))
        if not chunks:  # an empty batch still has the right names, dtypes and widths
            with torch.inference_mode():
                outputs = self.head(torch.zeros((0, X.shape[1]), dtype=torch.float32))
            chunks.append(tuple(t.numpy() for t in outputs))
        return {
            name: np.concatenate([chunk[i] for chunk in chunks])
            for i, name in enumerate(self.output_names)
        }

    def to_onnx(self, n_features: int) -> bytes:
        """One self-contained ONNX model: input "input" FP32 [batch, n_features]."""
        with _torch_threads(self.threads):
            return export_onnx(self.head, n_features, self.output_names)


# --------------------------------------------------------------------------- export


def export_onnx(head: nn.Module, n_features: int, output_names: tuple[str, ...]) -> bytes:
    """Exports `head` with a dynamic batch axis; the weights live inside the returned bytes.

    Exporter: the legacy TorchScript one (dynamo=False). Both were measured on torch 2.13
    for all four architectures: both export nn.LSTM as ONNX LSTM nodes, and both match
    torch to ~1e-7 (probabilities) at batch sizes 1, 7 and 256. The legacy exporter takes
    0.02-0.2 s per model where dynamo takes 0.8-2.5 s, which is most of a small job's
    export time on a 2-core machine; its graphs are also smaller (LSTM: 43 nodes, 219 KB
    against 56 nodes, 299 KB) and it does not need onnxscript at run time. It is
    deprecated, but torch is pinned in pyproject.toml: revisit when upgrading torch (the
    dynamo call is `torch.onnx.export(head, (x,), None, dynamo=True, input_names=...,
    output_names=..., dynamic_shapes=({0: torch.export.Dim("batch")},),
    external_data=False).model_proto.SerializeToString()`).
    """
    head = head.to("cpu").eval()
    # Batch 2, not 1: a size-1 example dimension invites exporters to specialise it.
    example = torch.zeros((2, n_features), dtype=torch.float32)
    # A path rather than a BytesIO: torch 2.13 types `f` as a path, and a model this size
    # is written as one file (external data only starts at the 2 GiB protobuf limit).
    with tempfile.TemporaryDirectory(prefix="paradigm-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        with _quiet_exporter(), torch.no_grad():
            torch.onnx.export(
                head,
                (example,),
                path,
                dynamo=False,
                input_names=["input"],
                output_names=list(output_names),
                dynamic_axes={name: {0: "batch"} for name in ("input", *output_names)},
                opset_version=17,
                do_constant_folding=True,
            )
        if any(p.name != path.name for p in Path(tmp).iterdir()):
            raise RuntimeError("torch.onnx wrote external data; the model must be one file")
        return path.read_bytes()


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Runs the block with `threads` torch intra-op threads, then restores the old count.

    One thread by default: the training machines have 2 cores, and torch's threads
    competing with the worker pool and ONNX Runtime were measured slower than one each.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keeps torch.onnx's progress prints, warnings and log lines out of the job's log."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


# --------------------------------------------------------------------------- training


@dataclass
class _Prepared:
    """Tensors on the training device plus what the export heads need."""

    x_fit: torch.Tensor
    t_fit: torch.Tensor
    x_val: torch.Tensor | None
    t_val: torch.Tensor | None
    mean: np.ndarray
    std: np.ndarray
    classes: np.ndarray | None
    y_mean: float
    y_std: float
    seconds: float


@dataclass(frozen=True)
class Shard:
    """This process's part of a DDP job (service/training/distributed.py): rank of size.

    Every rank draws the same seeded permutation and cuts it into the same global batches
    as a single process; it trains on rows rank::size of each one, so the ranks together
    see exactly the single-process batches. torch.distributed must be initialized.
    """

    rank: int
    size: int


def check_inputs(
    algorithm: str, task: str, X_train: np.ndarray, image_shape: list[int] | None
) -> tuple[str, np.ndarray]:
    """The task the network learns and X_train as contiguous float32, or ValueError."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown deep algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    if algorithm == "autoencoder":
        task = "anomaly_detection"
    elif task not in SUPERVISED_TASKS:
        raise ValueError(f"{algorithm} needs a classification or regression task, got {task!r}")
    if algorithm == "cnn" and not image_shape:
        raise ValueError("cnn needs an image dataset (rows with an image_shape, e.g. digits)")
    X_train = np.ascontiguousarray(X_train, dtype=np.float32)
    if X_train.ndim != 2 or len(X_train) == 0:
        raise ValueError(f"X_train must be a non-empty 2-D array, got shape {X_train.shape}")
    n_features = X_train.shape[1]
    if image_shape and math.prod(image_shape) != n_features:
        raise ValueError(f"image_shape {image_shape} does not hold {n_features} features")
    if image_shape and len(image_shape) != 2:
        raise ValueError(f"image_shape must be [height, width], got {image_shape}")
    if not np.all(np.isfinite(X_train)):
        raise ValueError("X_train holds NaN or infinite values")
    return task, X_train


def fit(
    algorithm: str,
    params: dict[str, Any],
    X_train: np.ndarray,
    y_train: np.ndarray,
    *,
    task: str,
    seed: int,
    emit: Emit,
    device: str = "auto",
    image_shape: list[int] | None = None,
    classes: np.ndarray | None = None,
    threads: int = 1,
) -> DeepModel:
    """Trains `algorithm` with validated, complete `params` and returns the fitted model.

    X_train is float32 (n, n_features), images flattened; `image_shape` ([H, W]) says how
    to unflatten them. `classes` are the sorted labels (classification). The autoencoder
    ignores y and always answers the anomaly_detection outputs. Emits one "epoch" event
    per epoch. Same seed, same data, same device -> same weights (on CPU, bit for bit).
    `threads` is torch's intra-op thread count for this model (training, prediction,
    export); the caller's setting is restored afterwards.
    """
    task, X_train = check_inputs(algorithm, task, X_train, image_shape)
    run_on = resolve_device(device)
    emit("fitting", f"training {algorithm} on {run_on}", device=run_on)
    network, data, history = train(
        algorithm, params, X_train, y_train, task=task, seed=seed, emit=emit,
        device=run_on, image_shape=image_shape, classes=classes, threads=threads,
    )  # fmt: skip
    return to_model(algorithm, task, network, data, run_on, threads, history)


def train(
    algorithm: str,
    params: dict[str, Any],
    X_train: np.ndarray,
    y_train: np.ndarray,
    *,
    task: str,
    seed: int,
    emit: Emit,
    device: str,
    image_shape: list[int] | None,
    classes: np.ndarray | None,
    threads: int,
    shard: Shard | None = None,
) -> tuple[_Network, _Prepared, list[dict[str, float]]]:
    """Builds the network and runs the epochs: one process's whole job, or one DDP rank's.

    Takes check_inputs' task and X_train and a resolved device. Every rank builds the
    same network from the same seed, so DDP starts from the weights a single process
    would. epochs=0 builds the untrained network (a DDP parent loads rank 0's weights).
    """
    # fork_rng keeps the caller's global torch RNG untouched (tests run fit in-process).
    fork_devices = [torch.cuda.current_device()] if device == "cuda" else []
    with (
        _torch_threads(threads),
        torch.random.fork_rng(devices=fork_devices),
        warnings.catch_warnings(),
    ):
        # Even kernel sizes are legal ("same" pads one side more, as Keras does); torch's
        # note that this costs a padded copy would otherwise repeat in every job log.
        warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        data = _prepare(X_train, y_train, task, classes, params, rng, device)
        n_features = X_train.shape[1]
        n_out = _n_outputs(task, data.classes, n_features)
        network = _Network(
            _Standardize(data.mean, data.std),
            _build_body(algorithm, params, n_features, n_out, image_shape),
        ).to(device)
        history = _train(network, data, params, task, seed, emit, device, shard)
    return network, data, history


def to_model(
    algorithm: str,
    task: str,
    network: _Network,
    data: _Prepared,
    device: str,
    threads: int,
    history: list[dict[str, float]],
) -> DeepModel:
    """The trained network behind its export head, on the CPU."""
    network = network.to("cpu").eval()
    head: nn.Module
    if task == "classification":
        assert data.classes is not None
        head = _ClassifierHead(network, data.classes)
    elif task == "regression":
        head = _RegressorHead(network, data.y_mean, data.y_std)
    else:
        head = _AnomalyHead(network)
    return DeepModel(
        algorithm=algorithm,
        task=task,
        head=head.eval(),
        parameter_count=sum(p.numel() for p in network.parameters()),
        device=device,
        preprocessing_seconds=data.seconds,
        classes=data.classes,
        threads=threads,
        history=history,
    )


def _n_outputs(task: str, classes: np.ndarray | None, n_features: int) -> int:
    if task == "classification":
        assert classes is not None
        return len(classes)
    return 1 if task == "regression" else n_features


def _build_body(
    algorithm: str,
    params: dict[str, Any],
    n_features: int,
    n_out: int,
    image_shape: list[int] | None,
) -> nn.Module:
    if algorithm == "mlp":
        return _MLP(
            n_features,
            n_out,
            int(params["hidden_units"]),
            int(params["hidden_layers"]),
            float(params["dropout"]),
        )
    if algorithm == "cnn":
        assert image_shape
        return _CNN(
            (int(image_shape[0]), int(image_shape[1])),
            n_out,
            int(params["filters_1"]),
            int(params["filters_2"]),
            int(params["kernel_size"]),
            float(params["dropout"]),
        )
    if algorithm == "lstm":
        seq_len, step = (
            (int(image_shape[0]), int(image_shape[1])) if image_shape else (n_features, 1)
        )
        return _LSTM(
            seq_len,
            step,
            n_out,
            int(params["hidden_units"]),
            int(params["num_layers"]),
            float(params["dropout"]),
        )
    return _Autoencoder(n_features, int(params["hidden_units"]), int(params["bottleneck_units"]))


def _prepare(
    X: np.ndarray,
    y: np.ndarray,
    task: str,
    classes: np.ndarray | None,
    params: dict[str, Any],
    rng: np.random.Generator,
    device: str,
) -> _Prepared:
    """Splits off Keras-style validation rows, computes the scaling, moves tensors."""
    started = time.perf_counter()
    n = len(X)
    y = np.asarray(y).reshape(-1)
    if task != "anomaly_detection" and len(y) != n:
        raise ValueError(f"X_train has {n} rows but y_train has {len(y)}")

    target: np.ndarray
    y_mean, y_std = 0.0, 1.0
    if task == "classification":
        classes = np.unique(y) if classes is None else np.asarray(classes).reshape(-1)
        if not np.array_equal(classes, np.round(classes)):
            raise ValueError("classification needs integer class labels")
        classes = classes.astype(np.int64)
        index = np.searchsorted(classes, y)
        index = np.clip(index, 0, len(classes) - 1)
        if not np.array_equal(classes[index], y):
            raise ValueError("y_train holds labels that are not in classes")
        target = index.astype(np.int64)
    elif task == "regression":
        target = y.astype(np.float32)
        if not np.all(np.isfinite(target)):
            raise ValueError("y_train holds NaN or infinite values")
    else:
        target = X  # the autoencoder's target is its input (standardized in _train)

    # Keras's validation_split takes the last rows; shuffling first (seeded) keeps it from
    # being one class when the data arrive sorted by label.
    order = rng.permutation(n)
    n_val = int(n * float(params.get("validation_split", 0.0)))
    if n - n_val < 1:
        raise ValueError(f"validation_split leaves no training rows out of {n}")
    fit_rows, val_rows = order[: n - n_val], order[n - n_val :]

    mean = X[fit_rows].mean(axis=0, dtype=np.float64)
    std = X[fit_rows].std(axis=0, dtype=np.float64)
    std[std < _MIN_STD] = 1.0
    if task == "regression":
        y_mean = float(target[fit_rows].mean(dtype=np.float64))
        y_std = float(target[fit_rows].std(dtype=np.float64))
        y_std = y_std if y_std >= _MIN_STD else 1.0

    def to_device(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device)

    return _Prepared(
        x_fit=to_device(X[fit_rows]),
        t_fit=to_device(target[fit_rows]),
        x_val=to_device(X[val_rows]) if n_val else None,
        t_val=to_device(target[val_rows]) if n_val else None,
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
        classes=classes if task == "classification" else None,
        y_mean=y_mean,
        y_std=y_std,
        seconds=time.perf_counter() - started,
    )


def _optimizer(params: dict[str, Any], weights: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    name = str(params.get("optimizer", "rmsprop"))
    lr = float(params.get("learning_rate", 1e-3))
    if name == "rmsprop":
        return torch.optim.RMSprop(weights, lr=lr, alpha=_RMSPROP_ALPHA, eps=_KERAS_EPSILON)
    if name == "adam":
        return torch.optim.Adam(weights, lr=lr, eps=_KERAS_EPSILON)
    if name == "sgd":
        return torch.optim.SGD(weights, lr=lr)
    raise ValueError(f"optimizer must be rmsprop, adam or sgd, got {name!r}")


def _train(
    network: _Network,
    data: _Prepared,
    params: dict[str, Any],
    task: str,
    seed: int,
    emit: Emit,
    device: str,
    shard: Shard | None = None,
) -> list[dict[str, float]]:
    epochs = int(params.get("epochs", 15))
    batch_size = int(params.get("batch_size", 128))
    # Inside the shared epoch loop, so single-process and DDP jobs alike get it.
    autocast = _autocast(str(params.get("precision", "fp32")), device)
    optimizer = _optimizer(params, network.parameters())
    # The guide prints relu + MSE for the classifier; softmax + cross-entropy is what
    # actually trains a classifier (the softmax is applied by the export head).
    loss_fn: nn.Module = nn.CrossEntropyLoss() if task == "classification" else nn.MSELoss()
    scaler = network.scaler
    model: nn.Module = network
    if shard is not None:
        model = _distributed(network, shard, device)
        # After the identical initialization: each rank draws its own dropout masks.
        torch.manual_seed(seed + shard.rank)
    # Only one process validates and reports; the others' epochs end at the loss sum.
    reports = shard is None or shard.rank == 0

    def targets(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if task == "regression":
            return ((t - data.y_mean) / data.y_std).unsqueeze(1)
        if task == "anomaly_detection":
            return scaler(x)
        return t

    # The shuffle's own generator (on the CPU, where randperm is the same on every
    # machine) keeps batch order independent of dropout's draws from the global RNG.
    shuffle = torch.Generator().manual_seed(seed)
    n_fit = len(data.x_fit)
    history: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        # Summed on the device: a float() per batch would wait for the GPU every step.
        total = torch.zeros((), device=device)
        for batch in torch.randperm(n_fit, generator=shuffle).to(device).split(batch_size):
            rows, weight = batch, 1.0
            if shard is not None:
                rows, weight = _rank_rows(batch, shard)
            x = data.x_fit[rows]
            with autocast():
                # The loss itself in fp32: bf16 outputs are cast up before it.
                loss = loss_fn(model(x).float(), targets(x, data.t_fit[rows]))
            optimizer.zero_grad(set_to_none=True)
            (loss if shard is None else loss * weight).backward()
            optimizer.step()
            total += loss.detach() * (len(rows) if weight else 0)
        if shard is not None:
            torch.distributed.all_reduce(total)
        metrics = {"loss": float(total) / n_fit}
        if not math.isfinite(metrics["loss"]):
            raise ValueError(
                f"training diverged: loss is {metrics['loss']} at epoch {epoch}; "
                "try a lower learning_rate"
            )
        if not reports:
            continue
        if data.x_val is not None and data.t_val is not None:
            metrics.update(_validate(network, data, targets, loss_fn, task))
        # float(total) above waited for the device, so this is the epoch's real duration.
        metrics["epoch_seconds"] = time.perf_counter() - epoch_started
        history.append(metrics)
        emit(
            "epoch",
            f"epoch {epoch}/{epochs}",
            epoch=epoch,
            epochs=epochs,
            progress=_PROGRESS_FIRST + (_PROGRESS_LAST - _PROGRESS_FIRST) * epoch / epochs,
            metrics=dict(metrics),
        )
    return history


def _autocast(precision: str, device: str) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """A factory of the context the forward pass and loss run in for `precision`.

    "bf16": torch.autocast to bfloat16 on the training device. The weights stay fp32 (the
    master copy the optimizer steps), gradients arrive in fp32, and bf16 has fp32's
    exponent range, so no GradScaler is needed. Validation, prediction and ONNX export run
    outside it, in fp32, so serving and the parity check do not change.
    """
    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "bf16":
        device_type = "cuda" if device == "cuda" else "cpu"
        return lambda: torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")


def _distributed(network: _Network, shard: Shard, device: str) -> nn.Module:
    """The network wrapped for DDP: gradients are averaged over the ranks at backward()."""
    from torch.nn.parallel import DistributedDataParallel

    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() != shard.size:
        raise RuntimeError(f"a DDP shard needs a process group of {shard.size} initialized")
    # No buffer sync before each forward: the only buffers are the scaler's statistics,
    # identical on every rank (same rows, same seed), so a broadcast per step is waste.
    return DistributedDataParallel(
        network,
        device_ids=[torch.cuda.current_device()] if device == "cuda" else None,
        forward_sync_buffers=False,
    )


def _rank_rows(batch: torch.Tensor, shard: Shard) -> tuple[torch.Tensor, float]:
    """This rank's rows of a global batch and the weight that makes DDP's gradient exact.

    Rank r takes rows r::size. DDP averages the ranks' gradients, so a rank's mean loss is
    weighted by size * its rows / the batch's rows: the average is then the mean over the
    whole batch, as in a single process, even when the batch does not divide evenly. A
    rank left without rows (a last batch smaller than the world) still runs a forward and
    backward, on one row weighted 0, because every rank must join every gradient
    all-reduce.
    """
    rows = batch[shard.rank :: shard.size]
    if len(rows) == 0:
        return batch[:1], 0.0
    return rows, shard.size * len(rows) / len(batch)


def _validate(
    network: _Network,
    data: _Prepared,
    targets: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    loss_fn: nn.Module,
    task: str,
) -> dict[str, float]:
    """Loss (and accuracy or RMSE in target units) over the validation rows, in chunks."""
    assert data.x_val is not None and data.t_val is not None
    network.eval()
    loss_sum = torch.zeros((), device=data.x_val.device)
    hits_or_squares = torch.zeros((), device=data.x_val.device)
    with torch.no_grad():
        for x, t in zip(data.x_val.split(_CHUNK), data.t_val.split(_CHUNK), strict=True):
            out = network(x)
            loss_sum += loss_fn(out, targets(x, t)) * len(x)
            if task == "classification":
                hits_or_squares += (out.argmax(dim=1) == t).sum()
            elif task == "regression":
                error = out.squeeze(1) * data.y_std + data.y_mean - t
                hits_or_squares += torch.sum(error**2)
    n = len(data.x_val)
    metrics = {"val_loss": float(loss_sum) / n}
    if task == "classification":
        metrics["val_accuracy"] = float(hits_or_squares) / n
    elif task == "regression":
        metrics["val_rmse"] = math.sqrt(float(hits_or_squares) / n)
    return metrics

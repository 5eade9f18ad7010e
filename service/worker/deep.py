"""The PyTorch side of training: fit a deep network and hand it to the pipeline.

Four algorithms: `mlp`, `cnn` (the guide's Keras CNN), `lstm` and `autoencoder`. `fit` trains
one and returns a `DeepModel` (the `FittedModel` protocol of spec.py) whose `to_onnx` gives a
self-contained ONNX model taking raw features, and whose `predict_outputs` returns exactly
what that ONNX model returns, so the pipeline's parity check compares like with like. The
networks are deep_networks.py, the epoch loop deep_training.py, the export deep_export.py.

Only training worker processes import this module: torch costs the serving process 1.5 s of
start-up and ~190 MiB, so nothing outside service/worker/deep*.py (and the DDP ranks of
service/worker/distributed.py) imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from service.worker.deep_export import export_onnx
from service.worker.deep_networks import OUTPUT_NAMES, export_head
from service.worker.deep_training import INFERENCE_CHUNK, Trained, torch_threads, train
from service.worker.fitting import FitRequest

ALGORITHMS = ("mlp", "cnn", "lstm", "autoencoder")
SUPERVISED_TASKS = ("classification", "regression")


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
        return OUTPUT_NAMES[self.task]

    def predict_outputs(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """The torch model's outputs for raw rows X, named and typed as the ONNX model's."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2:
            X = X.reshape(len(X), -1)
        self.head.eval()
        chunks: list[tuple[np.ndarray, ...]] = []
        with torch_threads(self.threads), torch.inference_mode():
            for start in range(0, len(X), INFERENCE_CHUNK):
                outputs = self.head(torch.from_numpy(X[start : start + INFERENCE_CHUNK]))
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
        with torch_threads(self.threads):
            return export_onnx(self.head, n_features, self.output_names)


def check_inputs(request: FitRequest) -> FitRequest:
    """The request with the task the network learns and X_train as contiguous float32, or
    ValueError."""
    algorithm, task, image_shape = request.algorithm, request.task, request.image_shape
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown deep algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    if algorithm == "autoencoder":
        task = "anomaly_detection"
    elif task not in SUPERVISED_TASKS:
        raise ValueError(f"{algorithm} needs a classification or regression task, got {task!r}")
    if algorithm == "cnn" and not image_shape:
        raise ValueError("cnn needs an image dataset (rows with an image_shape, e.g. digits)")
    X_train = np.ascontiguousarray(request.X_train, dtype=np.float32)
    if X_train.ndim != 2 or len(X_train) == 0:
        raise ValueError(f"X_train must be a non-empty 2-D array, got shape {X_train.shape}")
    n_features = X_train.shape[1]
    if image_shape and math.prod(image_shape) != n_features:
        raise ValueError(f"image_shape {image_shape} does not hold {n_features} features")
    if image_shape and len(image_shape) not in (2, 3):
        raise ValueError(
            f"image_shape must be [height, width] or [height, width, channels], got {image_shape}"
        )
    if not np.all(np.isfinite(X_train)):
        raise ValueError("X_train holds NaN or infinite values")
    return replace(request, task=task, X_train=X_train)


def fit(request: FitRequest) -> DeepModel:
    """Trains request.algorithm with validated, complete params and returns the fitted model.

    X_train is float32 (n, n_features), images flattened; `image_shape` ([H, W], or
    [H, W, C] for image uploads, flattened in that order) says how to unflatten them.
    `classes` are the sorted labels (classification). The autoencoder ignores y and always
    answers the anomaly_detection outputs. Emits one "epoch" event
    per epoch. Same seed, same data, same device -> same weights (on CPU, bit for bit).
    `threads` is torch's intra-op thread count for this model (training, prediction,
    export); the caller's setting is restored afterwards.
    """
    request = check_inputs(request)
    request = replace(request, device=resolve_device(request.device))
    request.emit(
        "fitting", f"training {request.algorithm} on {request.device}", device=request.device
    )
    return to_model(request, train(request))


def to_model(request: FitRequest, trained: Trained) -> DeepModel:
    """The trained network behind its export head, on the CPU.

    `request` is the checked one the network was trained for; its device is where it was
    trained (the model's `device`), whichever device `trained` is on now.
    """
    network = trained.network.to("cpu").eval()
    data = trained.prepared
    head = export_head(network, request.task, data.classes, data.y_mean, data.y_std)
    return DeepModel(
        algorithm=request.algorithm,
        task=request.task,
        head=head.eval(),
        parameter_count=sum(p.numel() for p in network.parameters()),
        device=request.device,
        preprocessing_seconds=data.seconds,
        classes=data.classes,
        threads=request.threads,
        history=trained.history,
    )

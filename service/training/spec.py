"""The contract between the job manager (serving process) and the training code (workers).

Standard library only: the serving process builds a TrainingSpec, a spawned worker runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class Emit(Protocol):
    """Reports progress from a worker; every argument is optional except the stage.

    Stages: "loading", "preprocessing", "fitting", "epoch", "evaluating", "exporting",
    "parity". `progress` is the fraction of the job done, in [0, 1]; `device` ("cpu" or
    "cuda") says where training runs, once that is decided.
    """

    def __call__(
        self,
        stage: str,
        message: str = "",
        *,
        progress: float | None = None,
        epoch: int | None = None,
        epochs: int | None = None,
        metrics: dict[str, float] | None = None,
        device: str | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class TrainingSpec:
    """One training job, fully resolved: hyperparameters validated and defaulted, task set."""

    job_id: str
    dataset_dir: str
    algorithm: str
    hyperparameters: dict[str, Any]
    task: str
    model_name: str
    out_dir: str
    device: str = "auto"
    seed: int = 0
    test_fraction: float = 0.25
    blas_threads: int = 1
    parity_tolerance: float = 1e-3


@dataclass(frozen=True)
class ImportSpec:
    """One import job: a file already on disk, to check or convert into out_dir."""

    job_id: str
    source_path: str
    format: str  # "onnx" | "skops"
    model_name: str
    out_dir: str
    paradigm: str = ""  # "" means inferred
    task: str = ""
    n_features: int = 0
    trusted_types: list[str] = field(default_factory=list)
    blas_threads: int = 1
    parity_tolerance: float = 1e-3


class FittedModel(Protocol):
    """A trained native model, whatever its library, as the pipeline sees it."""

    #: Learned parameters (weights, tree nodes, support vectors, stored samples ...).
    parameter_count: int
    #: Where it was trained: "cpu" or "cuda".
    device: str
    #: Seconds spent on preprocessing (scaler fit, reshaping, tensor transfer).
    preprocessing_seconds: float

    def predict_outputs(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Native predictions, keyed by the ONNX output names the export will have."""
        ...

    def to_onnx(self, n_features: int) -> bytes:
        """One self-contained ONNX model: input "input" FP32 [batch, n_features]."""
        ...


ProgressCallback = Callable[..., None]

"""The contract between the job manager (serving process) and the training code (workers).

Standard library only: the serving process builds a TrainingSpec, a spawned worker runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

#: The score each task is explained by, and the output it is computed from.
SCORING = {"classification": ("accuracy", "label"), "regression": ("r2", "prediction")}


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
    #: Most training rows, drawn from the training split after the test rows are held out
    #: (stratified for classification); 0 means all of them.
    train_size: int = 0
    #: Deep models: DDP processes launched by torchrun (service/training/distributed.py).
    world_size: int = 1
    #: Table datasets of numbers only: one input per column instead of one "input".
    column_inputs: bool = False
    #: Image datasets: "pixels" or "hog" (classical only), what the model learns from;
    #: "" for every other dataset.
    image_features: str = ""
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


@dataclass(frozen=True)
class ExplainSpec:
    """One explanation: permutation importance of a published model on a dataset's rows."""

    model_path: str
    #: "classification" (scored by accuracy on `output`) or "regression" (r2).
    task: str
    input: str
    output: str
    dataset_dir: str
    #: Rebuild the training job's held-out split (same seed and fraction) instead of
    #: sampling rows: the dataset is the one the model was trained on.
    same_split: bool
    split_seed: int
    test_fraction: float
    n_repeats: int
    max_rows: int
    seed: int
    #: time.time() after which the worker gives up (the caller's deadline or the server's).
    deadline: float
    blas_threads: int = 1


@dataclass(frozen=True)
class CompareSpec:
    """Two published models of one dataset scored on the same rows: those that every one
    of them held out from training (the intersection of their recorded test splits)."""

    #: model.onnx of each model: the candidate first, then the current holder.
    model_paths: tuple[str, ...]
    #: Each model's recorded split, in the same order: (seed, test fraction).
    splits: tuple[tuple[int, float], ...]
    #: "classification" or "regression": the targets and the split's stratification.
    task: str
    input: str
    #: The output scored ("label" or "prediction").
    output: str
    #: accuracy, f1_macro, r2 or rmse.
    metric: str
    dataset_dir: str
    #: time.time() after which the worker gives up.
    deadline: float
    blas_threads: int = 1


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


def feature_names(names: list[str], n_features: int) -> list[str]:
    """A dataset's feature names, or x0, x1, ... where it has none (or not one each)."""
    if len(names) == n_features:
        return [str(name) for name in names]
    return [f"x{i}" for i in range(n_features)]


@dataclass(frozen=True)
class CalibrationRowsSpec:
    """A cascade's calibration rows: a dataset's held-out split (the same seed and fraction
    as both models' training jobs), written as the models' inputs and the true classes."""

    dataset_dir: str
    split_seed: int
    test_fraction: float
    #: The models' input names: a table model takes one input per column, or one "input"
    #: matrix for a table of numbers.
    inputs: list[str]
    #: Where to write the .npz (inputs by name, "__labels__" the classes as text).
    out_path: str
    max_rows: int
    blas_threads: int = 1

"""One training job from start to finish, inside a worker process (import jobs: importing.py).

load -> split -> fit -> evaluate -> export -> check -> parity -> model.onnx + manifest.json in
out_dir. The registry publishes out_dir afterwards; nothing here knows about versions.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from service.cost.nvml import Nvml
from service.datasets import layout
from service.errors import InvalidArgument
from service.registry.manifest import Manifest
from service.training import catalog
from service.training.spec import Emit, FittedModel, TrainingSpec, feature_names
from service.worker import classical, export
from service.worker.fitting import DeepFit, FitRequest
from service.worker.job_output import TRAIN_LIBRARIES, library_versions, timestamp, write_model

#: Held-out rows compared between the native model and ONNX Runtime.
PARITY_ROWS = 256


def _evaluate(
    task: str,
    outputs: dict[str, np.ndarray],
    X_test: np.ndarray,
    y_test: np.ndarray,
    dataset_task: str,
    classes: np.ndarray | None,
) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, r2_score

    if len(y_test) == 0:
        return {}
    if task == "classification":
        labels = outputs["label"]
        return {
            "accuracy": float(accuracy_score(y_test, labels)),
            "f1_macro": float(f1_score(y_test, labels, average="macro")),
        }
    if task == "regression":
        prediction = outputs["prediction"].reshape(len(y_test), -1)[:, 0].astype(np.float64)
        metrics = {"rmse": float(math.sqrt(mean_squared_error(y_test, prediction)))}
        if len(y_test) > 1:  # R^2 is undefined on one sample (and NaN is not JSON)
            metrics["r2"] = float(r2_score(y_test, prediction))
        if dataset_task == "classification" and classes is not None and len(classes):
            # As the guide reads a regression on digits: the nearest class, within the range.
            rounded = np.clip(np.rint(prediction), classes.min(), classes.max())
            metrics["accuracy_rounded"] = float(np.mean(rounded == y_test))
        return metrics
    # Anomaly detection: how well held-out (presumed normal) rows are reconstructed.
    metrics = {}
    if "reconstruction" in outputs:
        error = outputs["reconstruction"].astype(np.float64) - X_test
        metrics["reconstruction_rmse"] = float(math.sqrt(np.mean(error**2)))
    if "score" in outputs:
        metrics["score_mean"] = float(np.mean(outputs["score"]))
    return metrics


def split(
    X: np.ndarray, y: np.ndarray, task: str, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test rows; Explain calls it again with the manifest's seed and fraction
    to score the very test rows of the job, so it must stay a pure function of those."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise InvalidArgument(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = math.ceil(test_fraction * len(X))
    if len(X) < 2 or n_test >= len(X):
        raise InvalidArgument(
            f"the dataset has {len(X)} samples: too few to hold out {test_fraction:.0%} "
            "for testing and train on the rest"
        )
    stratify = None
    if task == "classification":
        _, counts = np.unique(y, return_counts=True)
        # Stratifying needs two samples per class and a test set with room for every class.
        if counts.min() >= 2 and n_test >= len(counts) and len(X) - n_test >= len(counts):
            stratify = y
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_fraction, random_state=seed, stratify=stratify
    )
    return X_train, X_test, y_train, y_test


def _subsample(
    X: np.ndarray, y: np.ndarray, task: str, train_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """At most train_size rows of the training split, drawn with the seed; 0 keeps all.

    Classification keeps every class: one row each first, then the rest shared out in
    proportion to the class sizes (largest remainders first). train_test_split's
    stratification cannot promise that: it refuses classes of one row and drops small
    classes from small draws, and a learning curve's first points are small draws.
    """
    if train_size <= 0 or train_size >= len(X):
        return X, y
    rng = np.random.default_rng(seed)
    if task != "classification":
        chosen = np.sort(rng.choice(len(X), size=train_size, replace=False))
        return X[chosen], y[chosen]
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if train_size < len(classes):
        raise InvalidArgument(
            f"train_size {train_size} is smaller than the {len(classes)} classes of the "
            f"training split; ask for at least {len(classes)} rows so every class keeps one"
        )
    spare = counts - 1
    share = (train_size - len(classes)) * spare / spare.sum()
    quota = np.floor(share).astype(np.int64)
    left = train_size - len(classes) - int(quota.sum())
    # Largest fractional parts first; ties (and the order of equal parts) by class order.
    for index in np.argsort(-(share - quota), kind="stable")[:left]:
        quota[index] += 1
    chosen = np.sort(
        np.concatenate(
            [
                rng.permutation(np.flatnonzero(inverse == k))[: 1 + quota[k]]
                for k in range(len(classes))
            ]
        )
    )
    return X[chosen], y[chosen]


def targets(y: np.ndarray, task: str) -> np.ndarray:
    if task == "classification":
        if np.issubdtype(y.dtype, np.floating) and not np.all(np.equal(np.mod(y, 1), 0)):
            raise InvalidArgument(
                "classification needs integer class labels, but the dataset's targets have "
                "fractional values; train a regression instead"
            )
        return y.astype(np.int64)
    return y.astype(np.float64)


def run_training(
    spec: TrainingSpec,
    emit: Emit,
    *,
    backend: str = "auto",
    deep_fit: DeepFit | None = None,
) -> Manifest:
    """Trains, evaluates, exports and checks one model; writes model.onnx + manifest.

    `backend` is the DDP backend of a job with spec.world_size > 1 (distributed.BACKENDS).
    `deep_fit` replaces deep.fit (or distributed.fit) for a deep algorithm: standalone.py
    passes one that trains as rank 0 of a process group torchrun has already started.
    """
    with threadpool_limits(limits=spec.blas_threads):
        return _run_training(spec, emit, backend, deep_fit)


@dataclass
class TrainingData:
    """A job's dataset, resolved algorithm and parameters, and its train/test rows."""

    info: layout.DatasetInfo
    algorithm: catalog.Algorithm
    params: dict[str, Any]
    task: str
    n_features: int
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    classes: np.ndarray | None
    #: The range a regression on class labels is rounded into (linear_regression on digits).
    label_range: np.ndarray | None


def load_training_data(spec: TrainingSpec) -> TrainingData:
    """Loads and splits the job's dataset: the same rows for the same spec, so every DDP
    rank of a multi-machine job (standalone.py) can load its own copy."""
    dataset_dir = Path(spec.dataset_dir)
    info = layout.read_info(dataset_dir)
    X, y = layout.load_arrays(dataset_dir)
    if not np.all(np.isfinite(X)):
        raise InvalidArgument("the dataset's features hold NaN or infinite values")
    algorithm = catalog.get_algorithm(spec.algorithm)
    params = catalog.resolve_hyperparameters(algorithm, spec.hyperparameters)
    task = spec.task or catalog.resolve_task(algorithm, info.task)
    if task not in algorithm.tasks:
        raise InvalidArgument(f"{algorithm.name} cannot do {task}; it supports {algorithm.tasks}")
    y = targets(y, task)
    X_train, X_test, y_train, y_test = split(X, y, task, spec.test_fraction, spec.seed)
    # After the split: the test rows are the same whatever train_size, so a learning
    # curve's points are scored on one test set.
    X_train, y_train = _subsample(X_train, y_train, task, spec.train_size, spec.seed)
    return TrainingData(
        info=info,
        algorithm=algorithm,
        params=params,
        task=task,
        n_features=X.shape[1],
        X_train=X_train,
        X_test=X_test,
        y_train=y_train,
        y_test=y_test,
        classes=np.unique(y_train) if task == "classification" else None,
        label_range=np.unique(y) if info.task == "classification" else None,
    )


def _run_training(
    spec: TrainingSpec, emit: Emit, backend: str, deep_fit: DeepFit | None
) -> Manifest:
    emit("loading", f"loading dataset {Path(spec.dataset_dir).name}", progress=0.0)
    dataset_dir = Path(spec.dataset_dir)
    data = load_training_data(spec)
    info, algorithm, params, task = data.info, data.algorithm, data.params, data.task
    X_train, X_test, y_train, y_test = data.X_train, data.X_test, data.y_train, data.y_test
    classes, label_range, n_features = data.classes, data.label_range, data.n_features

    emit("fitting", f"fitting {algorithm.name} ({task}) on {len(X_train)} samples", progress=0.1)
    model: FittedModel
    distributed_backend = ""
    request = FitRequest(
        algorithm=algorithm.name,
        params=params,
        X_train=X_train,
        y_train=y_train,
        task=task,
        seed=spec.seed,
        emit=emit,
        device=spec.device,
        image_shape=info.image_shape or None,
        classes=classes,
        threads=spec.blas_threads,
    )
    if algorithm.paradigm == "classical":
        started = time.perf_counter()
        model = classical.fit(request)
    else:
        # Imported here, before the clock starts: torch takes 1.5 s and ~190 MiB to import in
        # every spawned worker, which is not fitting, and classical jobs never need it.
        from service.worker import deep, distributed

        fit: DeepFit = deep_fit or deep.fit
        if deep_fit is None and spec.world_size > 1:
            fit = functools.partial(
                distributed.fit,
                world_size=spec.world_size,
                backend=backend,
                # Inside out_dir, so the job manager's cleanup of a killed worker takes it
                # too; distributed.fit removes it before the model is published.
                workdir=Path(spec.out_dir) / "ddp",
            )
        gpu = _GpuEnergy.open() if spec.device in ("auto", "cuda") else None
        started = time.perf_counter()
        model = fit(request)
        if algorithm.name == "autoencoder":
            task = "anomaly_detection"
        if spec.world_size > 1:
            distributed_backend = distributed.resolve_backend(backend, model.device)
    fit_seconds = time.perf_counter() - started
    native_kind, importances = (
        classical.native_importances(model.estimator, n_features)
        if isinstance(model, classical.SklearnModel)
        else ("", [])
    )
    # Training rows seen: every epoch sees them again (deep); one pass for classical.
    epochs = int(params.get("epochs", 1)) if algorithm.paradigm == "deep" else 1
    usage = {"samples_processed": float(len(X_train) * epochs)}
    if model.device == "cuda":
        # The GPU was busy for the fit; NVML's energy counter says what that cost. NCCL
        # ranks hold one GPU each (gloo ranks may share one: counted once).
        usage["gpu_seconds"] = fit_seconds * (
            spec.world_size if distributed_backend == "nccl" else 1
        )
        if gpu is not None:
            usage["gpu_joules"] = gpu.joules_since_open()

    emit("evaluating", f"evaluating on {len(X_test)} held-out samples", progress=0.7)
    outputs = model.predict_outputs(X_test)
    metrics = _evaluate(task, outputs, X_test, y_test, info.task, label_range)
    emit("evaluating", "evaluated", progress=0.75, metrics=metrics)

    emit("exporting", "exporting to ONNX", progress=0.8)
    started = time.perf_counter()
    onnx_bytes = model.to_onnx(n_features)
    export.check_model(onnx_bytes)
    export_seconds = time.perf_counter() - started
    inputs, output_specs = export.signature(onnx_bytes)

    emit("parity", "comparing ONNX Runtime with the trained model", progress=0.9)
    rows = (X_test if len(X_test) else X_train)[:PARITY_ROWS]
    native = model.predict_outputs(rows)
    onnx_out = export.run_onnx(onnx_bytes, {"input": rows}, threads=spec.blas_threads)
    parity = export.check_parity(native, onnx_out, spec.parity_tolerance)

    metrics.update(
        fit_seconds=fit_seconds,
        preprocessing_seconds=float(model.preprocessing_seconds),
        export_seconds=export_seconds,
        train_samples=float(len(X_train)),
        test_samples=float(len(X_test)),
        **usage,
    )
    if spec.train_size:
        metrics["train_size"] = float(spec.train_size)
    hyperparameters = dict(params)
    if distributed_backend:  # shown by GetModel with the parameters that made the model
        hyperparameters.update(world_size=spec.world_size, distributed_backend=distributed_backend)
    out_dir = Path(spec.out_dir)
    checksum = write_model(out_dir, onnx_bytes)
    libraries = TRAIN_LIBRARIES + (("torch",) if algorithm.paradigm == "deep" else ())
    manifest = Manifest(
        name=spec.model_name,
        version="",
        paradigm=algorithm.paradigm,
        algorithm=algorithm.name,
        task=task,
        inputs=inputs,
        outputs=output_specs,
        dataset=dataset_dir.name,
        dataset_fingerprint=info.fingerprint,
        hyperparameters=hyperparameters,
        metrics=metrics,
        parity_max_abs_error=parity,
        parameter_count=int(model.parameter_count),
        onnx_bytes=len(onnx_bytes),
        checksum=checksum,
        library_versions=library_versions(libraries),
        created_at=timestamp(),
        training_device=model.device,
        classes=[float(c) for c in classes] if classes is not None else [],
        train_size=spec.train_size,
        split_seed=spec.seed,
        test_fraction=spec.test_fraction,
        feature_names=feature_names(info.feature_names, n_features),
        native_kind=native_kind,
        native_importances=importances,
        cpu_only_domains=export.cpu_only_domains(onnx_bytes),
    )
    manifest.write(out_dir)
    emit("parity", f"done: parity error {parity:.3g}", progress=1.0)
    return manifest


class _GpuEnergy:
    """NVML's energy counter of GPU 0, read at open and on demand; None without NVML."""

    def __init__(self, nvml: Nvml) -> None:
        self._nvml = nvml
        self._start = nvml.energy_joules(0)

    @classmethod
    def open(cls) -> _GpuEnergy | None:
        nvml = Nvml.open()
        return cls(nvml) if nvml is not None and nvml.count else None

    def joules_since_open(self) -> float:
        return self._nvml.energy_joules(0) - self._start

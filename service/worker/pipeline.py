"""One training job from start to finish, inside a worker process.

load -> split -> fit -> evaluate -> export -> check -> parity -> model.onnx + manifest.json in
out_dir. The registry publishes out_dir afterwards; nothing here knows about versions. The
rows come from training_data.py; each later stage is one function below. Import jobs are
importing.py.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from service.registry.manifest import Manifest, TensorSpec
from service.training.spec import Emit, FittedModel, TrainingSpec, feature_names
from service.worker import bootstrap, classical, export
from service.worker.fitting import DeepFit, FitRequest
from service.worker.gpu_energy import GpuEnergy
from service.worker.job_output import TRAIN_LIBRARIES, library_versions, timestamp, write_model
from service.worker.training_data import RawInputs, TrainingData, load_training_data

#: Held-out rows compared between the native model and ONNX Runtime.
PARITY_ROWS = 256


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
        emit("loading", f"loading dataset {Path(spec.dataset_dir).name}", progress=0.0)
        data = load_training_data(spec)
        fitted = _fit(spec, data, emit, backend, deep_fit)
        metrics = _evaluate(fitted, data, emit, seed=spec.seed)
        exported = _export_and_check(fitted.model, data, spec, emit)
        manifest = _write_outputs(spec, data, fitted, metrics, exported)
        emit("parity", f"done: parity error {exported.parity:.3g}", progress=1.0)
        return manifest


def fit_request(spec: TrainingSpec, data: TrainingData, emit: Emit) -> FitRequest:
    """What fitting the job's model needs: its training rows, parameters and settings."""
    return FitRequest(
        algorithm=data.algorithm.name,
        params=data.params,
        X_train=data.X_train,
        y_train=data.y_train,
        task=data.task,
        seed=spec.seed,
        emit=emit,
        device=spec.device,
        image_shape=data.info.image_shape or None,
        classes=data.classes,
        threads=spec.blas_threads,
        text=data.text,
    )


# --------------------------------------------------------------------------- fit


@dataclass
class Fitted:
    """The fitted model and what fitting it took."""

    model: FittedModel
    #: The model's task: the autoencoder's is anomaly_detection whatever the job asked.
    task: str
    seconds: float
    #: samples_processed, and on CUDA gpu_seconds and gpu_joules: the fit's cost.
    usage: dict[str, float]
    #: The DDP backend that trained it ("" for a single process).
    distributed_backend: str = ""


def _fit(
    spec: TrainingSpec, data: TrainingData, emit: Emit, backend: str, deep_fit: DeepFit | None
) -> Fitted:
    algorithm = data.algorithm
    emit(
        "fitting",
        f"fitting {algorithm.name} ({data.task}) on {len(data.X_train)} samples",
        progress=0.1,
    )
    request = fit_request(spec, data, emit)
    if algorithm.paradigm == "classical":
        started = time.perf_counter()
        model = classical.fit(request)
        seconds = time.perf_counter() - started
        return Fitted(model, data.task, seconds, _usage(data, model, seconds, 1, None))
    return _fit_deep(spec, data, request, backend, deep_fit)


def _fit_deep(
    spec: TrainingSpec,
    data: TrainingData,
    request: FitRequest,
    backend: str,
    deep_fit: DeepFit | None,
) -> Fitted:
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
    gpu = GpuEnergy.open() if spec.device in ("auto", "cuda") else None
    started = time.perf_counter()
    model = fit(request)
    seconds = time.perf_counter() - started
    task = "anomaly_detection" if request.algorithm == "autoencoder" else request.task
    chosen = distributed.resolve_backend(backend, model.device) if spec.world_size > 1 else ""
    # NCCL ranks hold one GPU each (gloo ranks may share one: counted once).
    gpus = spec.world_size if chosen == "nccl" else 1
    return Fitted(model, task, seconds, _usage(data, model, seconds, gpus, gpu), chosen)


def _usage(
    data: TrainingData, model: FittedModel, seconds: float, gpus: int, gpu: GpuEnergy | None
) -> dict[str, float]:
    """What the fit cost: training rows seen, and on CUDA the GPU's time and energy."""
    # Every epoch sees the training rows again (deep); one pass for classical.
    epochs = int(data.params.get("epochs", 1)) if data.algorithm.paradigm == "deep" else 1
    usage = {"samples_processed": float(len(data.X_train) * epochs)}
    if model.device == "cuda":
        # The GPU was busy for the fit; NVML's energy counter says what that cost.
        usage["gpu_seconds"] = seconds * gpus
        if gpu is not None:
            usage["gpu_joules"] = gpu.joules_since_open()
    return usage


# --------------------------------------------------------------------------- evaluate


def _evaluate(fitted: Fitted, data: TrainingData, emit: Emit, *, seed: int) -> dict[str, float]:
    """The model's quality metrics on the held-out rows, with their 95 % bootstrap
    intervals ({metric}_ci_low, {metric}_ci_high)."""
    emit("evaluating", f"evaluating on {len(data.X_test)} held-out samples", progress=0.7)
    outputs = fitted.model.predict_outputs(data.X_test)
    metrics = _score(
        fitted.task, outputs, data.X_test, data.y_test, data.info.task, data.label_range
    )
    if metrics:
        metrics.update(bootstrap.intervals(fitted.task, data.y_test, outputs, seed))
    emit("evaluating", "evaluated", progress=0.75, metrics=metrics)
    return metrics


def _score(
    task: str,
    outputs: dict[str, np.ndarray],
    X_test: np.ndarray,
    y_test: np.ndarray,
    dataset_task: str,
    classes: np.ndarray | None,
) -> dict[str, float]:
    """The metrics of `task` for the model's outputs on the test rows.

    `dataset_task` and `classes` are the dataset's: a regression on class labels is also
    scored by its predictions rounded to the nearest class.
    """
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


# --------------------------------------------------------------------------- export + parity


@dataclass
class Exported:
    """The model as checked ONNX, its signature, and how well ONNX Runtime agrees with it."""

    onnx_bytes: bytes
    seconds: float
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    #: The largest parity error found (within the job's tolerance, else ParityError).
    parity: float


def _export_and_check(
    model: FittedModel, data: TrainingData, spec: TrainingSpec, emit: Emit
) -> Exported:
    """Exports the model to ONNX, checks the graph, and compares ONNX Runtime's outputs with
    the native model's on held-out rows (training rows when no row is held out)."""
    emit("exporting", "exporting to ONNX", progress=0.8)
    started = time.perf_counter()
    onnx_bytes = model.to_onnx(data.n_features)
    if data.raw is not None:
        onnx_bytes = _with_front(onnx_bytes, data.raw)
    export.check_model(onnx_bytes)
    seconds = time.perf_counter() - started
    inputs, outputs = export.signature(onnx_bytes)

    emit("parity", "comparing ONNX Runtime with the trained model", progress=0.9)
    if data.raw is not None:
        native, onnx_out = _raw_parity_outputs(model, data.raw, onnx_bytes, spec)
    else:
        rows = (data.X_test if len(data.X_test) else data.X_train)[:PARITY_ROWS]
        native = model.predict_outputs(rows)
        onnx_out = export.run_onnx(onnx_bytes, {"input": rows}, threads=spec.blas_threads)
    parity = export.check_parity(native, onnx_out, spec.parity_tolerance)
    return Exported(onnx_bytes, seconds, inputs, outputs, parity)


def _with_front(onnx_bytes: bytes, raw: RawInputs) -> bytes:
    """One graph from raw columns or pixels to answer: the column preprocessing (or image
    front end) joined in front of the model's graph, and class indices turned into the
    classes themselves."""
    import onnx

    from service.worker import columns

    model = columns.join(raw.preprocessor.to_onnx(), onnx.load_from_string(onnx_bytes), "input")
    if raw.class_values is not None:
        model = columns.with_class_labels(model, raw.class_values)
    return bytes(model.SerializeToString())


def _raw_parity_outputs(
    model: FittedModel, raw: RawInputs, onnx_bytes: bytes, spec: TrainingSpec
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Native and ONNX outputs on held-out raw rows plus the edge rows the served graph
    will meet: every value missing and categories never seen in training (tables), all
    black and all white (images)."""
    rows = raw.parity_rows.take(np.arange(min(PARITY_ROWS, len(raw.parity_rows))))
    rows = rows.with_edge_rows()
    native = model.predict_outputs(raw.preprocessor.transform(rows))
    if raw.class_values is not None and "label" in native:
        native["label"] = raw.class_values[native["label"]]
    feeds = raw.preprocessor.feeds(rows)
    onnx_out = export.run_onnx(onnx_bytes, feeds, threads=spec.blas_threads)
    return native, onnx_out


# --------------------------------------------------------------------------- manifest


def _write_outputs(
    spec: TrainingSpec,
    data: TrainingData,
    fitted: Fitted,
    metrics: dict[str, float],
    exported: Exported,
) -> Manifest:
    """Writes model.onnx and its manifest into spec.out_dir; the manifest."""
    metrics.update(
        fit_seconds=fitted.seconds,
        preprocessing_seconds=float(fitted.model.preprocessing_seconds)
        + (data.raw.seconds if data.raw is not None else 0.0),
        export_seconds=exported.seconds,
        train_samples=float(len(data.X_train)),
        test_samples=float(len(data.X_test)),
        **fitted.usage,
    )
    if spec.train_size:
        metrics["train_size"] = float(spec.train_size)
    out_dir = Path(spec.out_dir)
    checksum = write_model(out_dir, exported.onnx_bytes)
    manifest = _manifest(spec, data, fitted, metrics, exported, checksum)
    manifest.write(out_dir)
    return manifest


def _manifest(
    spec: TrainingSpec,
    data: TrainingData,
    fitted: Fitted,
    metrics: dict[str, float],
    exported: Exported,
    checksum: str,
) -> Manifest:
    algorithm, model = data.algorithm, fitted.model
    hyperparameters = dict(data.params)
    if fitted.distributed_backend:  # shown by GetModel with the parameters that made the model
        hyperparameters.update(
            world_size=spec.world_size, distributed_backend=fitted.distributed_backend
        )
    if spec.image_features:
        hyperparameters["image_features"] = spec.image_features
    native_kind, importances = (
        classical.native_importances(model.estimator, data.n_features)
        if isinstance(model, classical.SklearnModel)
        else ("", [])
    )
    libraries = TRAIN_LIBRARIES + (("torch",) if algorithm.paradigm == "deep" else ())
    return Manifest(
        name=spec.model_name,
        version="",
        paradigm=algorithm.paradigm,
        algorithm=algorithm.name,
        task=fitted.task,
        inputs=exported.inputs,
        outputs=exported.outputs,
        dataset=Path(spec.dataset_dir).name,
        dataset_fingerprint=data.info.fingerprint,
        hyperparameters=hyperparameters,
        metrics=metrics,
        parity_max_abs_error=exported.parity,
        parameter_count=int(model.parameter_count),
        onnx_bytes=len(exported.onnx_bytes),
        checksum=checksum,
        library_versions=library_versions(libraries),
        created_at=timestamp(),
        training_device=model.device,
        classes=_class_numbers(data),
        class_names=_class_names(data),
        input_columns=data.raw.preprocessor.input_columns() if data.raw is not None else [],
        train_size=spec.train_size,
        split_seed=spec.seed,
        test_fraction=spec.test_fraction,
        feature_names=_feature_names(data),
        native_kind=native_kind,
        native_importances=importances,
        cpu_only_domains=export.cpu_only_domains(exported.onnx_bytes),
    )


def _class_numbers(data: TrainingData) -> list[float]:
    """The classes as numbers (arrays, and tables with numbered classes); [] for names."""
    if data.raw is not None:
        values = data.raw.class_values
        if values is None or values.dtype.kind in "OUS":
            return []
        return [float(v) for v in values]
    return [float(c) for c in data.classes] if data.classes is not None else []


def _class_names(data: TrainingData) -> list[str]:
    """The classes as the model answers them, in the order of its probabilities."""
    if data.raw is not None and data.raw.class_values is not None:
        return [str(v) for v in data.raw.class_values[data.classes]]
    if data.classes is not None:
        return [str(int(c)) if float(c).is_integer() else str(c) for c in data.classes]
    return []


def _feature_names(data: TrainingData) -> list[str]:
    """The model's features: a table's after preprocessing ("island_Biscoe", ...), an
    image's pixels or oriented-gradient cells."""
    if data.raw is not None:
        return [str(n) for n in data.raw.preprocessor.feature_names()]
    return feature_names(data.info.feature_names, data.n_features)

"""An import job, inside a worker process: an ONNX file checked, or a skops file converted,
into model.onnx + manifest.json in out_dir (the registry publishes out_dir afterwards).

A skops file is loaded only when every type it names is trusted by skops or by the caller,
and it is never unpickled.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from service.errors import InvalidArgument
from service.registry.manifest import Manifest
from service.training import catalog
from service.training.spec import Emit, ImportSpec, feature_names
from service.worker import classical, export
from service.worker.job_output import TRAIN_LIBRARIES, library_versions, timestamp, write_model

#: Random rows an imported scikit-learn model is checked on (it comes without data).
IMPORT_PARITY_ROWS = 64


class UntrustedTypesError(InvalidArgument, ValueError):
    """A skops file names types that the caller did not list as trusted."""


def run_import(spec: ImportSpec, emit: Emit) -> Manifest:
    """Checks an ONNX file, or converts a skops file, into model.onnx + manifest in out_dir."""
    with threadpool_limits(limits=spec.blas_threads):
        if spec.format == "onnx":
            return _import_onnx(spec, emit)
        if spec.format == "skops":
            return _import_skops(spec, emit)
    raise InvalidArgument(f"unknown import format {spec.format!r}; expected onnx or skops")


def _check_paradigm(paradigm: str) -> None:
    if paradigm not in ("", "classical", "deep"):
        raise InvalidArgument(f"paradigm must be classical or deep, got {paradigm!r}")


def _check_task(task: str) -> None:
    if task and task not in catalog.TASKS:
        raise InvalidArgument(f"unknown task {task!r}; expected one of {', '.join(catalog.TASKS)}")


def _import_onnx(spec: ImportSpec, emit: Emit) -> Manifest:
    _check_paradigm(spec.paradigm)
    _check_task(spec.task)
    emit("loading", f"reading {Path(spec.source_path).name}", progress=0.0)
    onnx_bytes = Path(spec.source_path).read_bytes()
    emit("exporting", "checking the ONNX model", progress=0.3)
    export.check_model(onnx_bytes)
    inputs, outputs = export.signature(onnx_bytes)
    paradigm = spec.paradigm or ("classical" if export.uses_ml_domain(onnx_bytes) else "deep")
    checksum = write_model(Path(spec.out_dir), onnx_bytes)
    manifest = Manifest(
        name=spec.model_name,
        version="",
        paradigm=paradigm,
        algorithm="imported",
        task=spec.task,
        inputs=inputs,
        outputs=outputs,
        hyperparameters={"source_format": "onnx"},
        onnx_bytes=len(onnx_bytes),
        checksum=checksum,
        library_versions=library_versions(("onnx", "onnxruntime")),
        created_at=timestamp(),
        cpu_only_domains=export.cpu_only_domains(onnx_bytes),
    )
    manifest.write(Path(spec.out_dir))
    emit("parity", "imported", progress=1.0)
    return manifest


def _import_skops(spec: ImportSpec, emit: Emit) -> Manifest:
    _check_paradigm(spec.paradigm)
    _check_task(spec.task)
    source = Path(spec.source_path)
    emit("loading", f"reading {source.name}", progress=0.0)
    estimator = _load_skops(source, spec.trusted_types)
    task = _skops_task(estimator, spec.task)
    n_features = _skops_n_features(estimator, spec.n_features)

    emit("exporting", f"converting {type(estimator).__name__} to ONNX", progress=0.3)
    started = time.perf_counter()
    onnx_bytes = classical.sklearn_to_onnx(estimator, n_features, task)
    export.check_model(onnx_bytes)
    export_seconds = time.perf_counter() - started
    inputs, outputs = export.signature(onnx_bytes)

    emit("parity", "comparing ONNX Runtime with the imported model", progress=0.7)
    rows = np.random.default_rng(0).normal(size=(IMPORT_PARITY_ROWS, n_features))
    rows = rows.astype(np.float32)
    native = classical.SklearnModel(estimator, task).predict_outputs(rows)
    onnx_out = export.run_onnx(onnx_bytes, {"input": rows}, threads=spec.blas_threads)
    parity = export.check_parity(native, onnx_out, spec.parity_tolerance)

    checksum = write_model(Path(spec.out_dir), onnx_bytes)
    final = classical.final_estimator(estimator)
    native_kind, importances = classical.native_importances(estimator, n_features)
    manifest = Manifest(
        name=spec.model_name,
        version="",
        paradigm=spec.paradigm or "classical",
        algorithm="imported",
        task=task,
        inputs=inputs,
        outputs=outputs,
        hyperparameters={
            "source_format": "skops",
            "estimator": f"{type(final).__module__}.{type(final).__qualname__}",
        },
        metrics={"export_seconds": export_seconds},
        parity_max_abs_error=parity,
        parameter_count=classical.count_parameters(estimator),
        onnx_bytes=len(onnx_bytes),
        checksum=checksum,
        library_versions=library_versions((*TRAIN_LIBRARIES, "skops")),
        created_at=timestamp(),
        classes=_numeric_classes(estimator),
        feature_names=feature_names([], n_features),
        native_kind=native_kind,
        native_importances=importances,
        cpu_only_domains=export.cpu_only_domains(onnx_bytes),
    )
    manifest.write(Path(spec.out_dir))
    emit("parity", f"done: parity error {parity:.3g}", progress=1.0)
    return manifest


def _load_skops(source: Path, trusted_types: list[str]) -> Any:
    """The estimator in a skops file, or UntrustedTypesError when it names a type that
    neither skops nor the caller trusts."""
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=source)
    except Exception as exc:  # zipfile.BadZipFile, json errors, KeyError ...
        raise InvalidArgument(f"{source.name} is not a readable skops file: {exc}") from None
    refused = sorted(set(untrusted) - set(trusted_types))
    if refused:
        raise UntrustedTypesError(
            f"refusing to load {source.name}: it contains types that are not trusted by "
            f"default: {', '.join(refused)}. If you trust the file's author, pass them as "
            "trusted_types"
        )
    # skops rebuilds objects from its JSON schema and never unpickles.
    return sio.load(source, trusted=untrusted)


def _skops_task(estimator: Any, given: str) -> str:
    """classification or regression, as the estimator is; the given task must agree."""
    from sklearn.base import is_classifier, is_regressor

    if is_classifier(estimator):
        task = "classification"
    elif is_regressor(estimator):
        task = "regression"
    else:
        raise InvalidArgument(
            f"{type(estimator).__name__} is neither a classifier nor a regressor; "
            "only those can be imported from skops"
        )
    if given and given != task:
        raise InvalidArgument(f"the file holds a {task} model, but task {given!r} was given")
    return task


def _skops_n_features(estimator: Any, given: int) -> int:
    """The features the estimator was fitted on; the given count must agree, and is used
    where the estimator does not say."""
    n_features = int(getattr(estimator, "n_features_in_", 0) or 0)
    if not n_features:
        n_features = given
    elif given and given != n_features:
        raise InvalidArgument(
            f"the model was fitted on {n_features} features, but n_features={given} was given"
        )
    if n_features <= 0:
        raise InvalidArgument(
            f"cannot tell how many features {type(estimator).__name__} takes: it has no "
            "n_features_in_; pass n_features"
        )
    return n_features


def _numeric_classes(estimator: Any) -> list[float]:
    """The manifest's classes: the estimator's class labels when they are numbers."""
    labels = getattr(estimator, "classes_", None)
    if labels is not None and np.issubdtype(np.asarray(labels).dtype, np.number):
        return [float(c) for c in labels]
    return []

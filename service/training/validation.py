"""Training and import requests checked completely, before anything is queued.

Pure functions of the request, the server's settings, the algorithm catalog and the
dataset's info: each returns the spec a worker will run, or raises InvalidArgument,
NotFound or FailedPrecondition with what to change.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.errors import FailedPrecondition, InvalidArgument
from service.registry.store import validate_model_name
from service.training import catalog
from service.training.spec import ImportSpec, TrainingSpec

if TYPE_CHECKING:
    from service.datasets.layout import DatasetInfo
    from service.settings import Settings

DEVICES = ("auto", "cpu", "cuda")
IMAGE_FEATURES = ("pixels", "hog")

# What the worker processes import: the serving process itself imports none of them.
_TRAINING_LIBRARIES = {"classical": ("sklearn", "skl2onnx", "onnx"), "deep": ("torch", "onnx")}


@dataclass(frozen=True)
class TrainingRequest:
    """A StartTraining request's fields, as the caller sent them."""

    dataset: str
    algorithm: str
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    model_name: str = ""
    task: str = ""
    device: str = "auto"
    seed: int | None = None
    test_fraction: float = 0.0
    train_size: int = 0
    world_size: int = 0
    column_inputs: bool = False
    image_features: str = ""


@dataclass(frozen=True)
class ImportRequest:
    """An ImportModel request's fields; `source` is the uploaded file, already on disk."""

    source: Path
    model_name: str
    file_format: str
    paradigm: str = ""
    task: str = ""
    n_features: int = 0
    trusted_types: list[str] = field(default_factory=list)


def trainable_algorithm(name: str) -> catalog.Algorithm:
    """The algorithm a request names, if this server has the libraries to train it."""
    algorithm = catalog.get_algorithm(name)
    require_training_libraries(algorithm.paradigm)
    return algorithm


def training_spec(
    request: TrainingRequest,
    *,
    job_id: str,
    algorithm: catalog.Algorithm,
    info: DatasetInfo,
    dataset_dir: Path,
    settings: Settings,
) -> TrainingSpec:
    """The job a valid request asks for (the output directory is set when it starts)."""
    params = catalog.resolve_hyperparameters(algorithm, request.hyperparameters)
    task = catalog.resolve_task(algorithm, info.task, request.task)
    if info.is_table:
        _check_table(algorithm, task, info)
        check_table_algorithm(algorithm, info, request.world_size)
    image_features = _check_image_features(request.image_features, algorithm, task, info)
    if algorithm.name == "cnn" and not info.image_shape:
        raise InvalidArgument(
            f"cnn needs an image dataset (rows with an image_shape, like digits); "
            f"dataset {request.dataset!r} has none: try mlp or lstm"
        )
    name = validate_model_name(request.model_name or f"{request.dataset}-{request.algorithm}")
    if request.device not in DEVICES:
        raise InvalidArgument(f"device {request.device!r} is not one of {list(DEVICES)}")
    fraction = request.test_fraction or 0.25
    if not 0.05 <= fraction <= 0.9:
        raise InvalidArgument(f"test_fraction {fraction} must be between 0.05 and 0.9")
    _check_train_size(request.train_size, task, info.n_classes)
    return TrainingSpec(
        job_id=job_id,
        dataset_dir=str(dataset_dir),
        algorithm=algorithm.name,
        hyperparameters=params,
        task=task,
        model_name=name,
        out_dir="",  # set when it starts: staging directories are made just in time
        device=request.device,
        seed=0 if request.seed is None else request.seed,
        test_fraction=fraction,
        train_size=request.train_size,
        world_size=_check_world_size(request.world_size, algorithm, settings.max_world_size),
        column_inputs=_check_column_inputs(request.column_inputs, info),
        image_features=image_features,
        blas_threads=settings.worker_blas_threads,
        parity_tolerance=settings.parity_tolerance,
    )


def import_spec(request: ImportRequest, *, job_id: str, settings: Settings) -> ImportSpec:
    """The import a valid request asks for (the output directory is set when it starts)."""
    require_training_libraries("classical")
    name = validate_model_name(request.model_name)
    allowed = tuple(settings.skops_trusted_prefixes)
    refused = sorted(t for t in request.trusted_types if not t.startswith(allowed))
    if refused:
        # skops builds whatever type it is told to trust, callables included: a caller
        # may widen its trust only within what the operator allows.
        raise InvalidArgument(
            f"trusted_types {refused} may not be trusted on this server: only types "
            f"starting with {list(allowed)} (the operator sets "
            "PARADIGM_SKOPS_TRUSTED_PREFIXES)"
        )
    return ImportSpec(
        job_id=job_id,
        source_path=str(request.source),
        format=request.file_format,
        model_name=name,
        out_dir="",
        paradigm=request.paradigm,
        task=request.task,
        n_features=request.n_features,
        trusted_types=list(request.trusted_types),
        blas_threads=settings.worker_blas_threads,
        parity_tolerance=settings.parity_tolerance,
    )


def require_training_libraries(paradigm: str) -> None:
    """FailedPrecondition on a serve-only install (deploy/docker's `serve` target).

    Refused before anything is queued: otherwise the job would be accepted and then fail
    in its worker with an ImportError the caller can do nothing about.
    """
    needed = _TRAINING_LIBRARIES["classical"] + _TRAINING_LIBRARIES.get(paradigm, ())
    missing = sorted({module for module in needed if _missing(module)})
    if missing:
        raise FailedPrecondition(
            f"this server cannot train or import models: {', '.join(missing)} not installed "
            "(a serve-only install); send training, imports and explanations to a server "
            "installed with the train extra (the `train` image, paradigm-trainer on Kubernetes)"
        )


@functools.cache
def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def _check_column_inputs(column_inputs: bool, info: DatasetInfo) -> bool:
    if column_inputs and not info.is_table:
        raise InvalidArgument(
            f"column_inputs needs a table dataset (a CSV or Parquet upload); {info.name} holds "
            "arrays, served as one input"
        )
    return column_inputs


def _check_image_features(
    given: str, algorithm: catalog.Algorithm, task: str, info: DatasetInfo
) -> str:
    """What an image model learns from: "pixels" unless asked; "" for other datasets."""
    if not info.is_images:
        if given:
            raise InvalidArgument(
                f"image_features needs an image dataset (an image archive upload); "
                f"{info.name} is not one"
            )
        return ""
    if task == "regression":
        raise InvalidArgument(
            f"{algorithm.name} does regression, and {info.name}'s labels are class names "
            f"(its folders: {', '.join(c['value'] for c in info.classes[:3])}, ...): train a "
            "classifier"
        )
    features = given or "pixels"
    if features not in IMAGE_FEATURES:
        raise InvalidArgument(f"image_features {given!r} is not one of {list(IMAGE_FEATURES)}")
    if features != "pixels" and algorithm.paradigm != "classical":
        raise InvalidArgument(
            f"image_features {features!r} is for classical algorithms; {algorithm.name} learns "
            "its own features from the pixels"
        )
    return features


def _check_table(algorithm: catalog.Algorithm, task: str, info: DatasetInfo) -> None:
    """What a table of columns cannot be trained as, refused before anything is queued."""
    named = any(not _is_number(c["value"]) for c in info.classes)
    if named and task == "regression":
        raise InvalidArgument(
            f"{algorithm.name} does regression, and {info.name}'s labels are class names "
            f"({', '.join(c['value'] for c in info.classes[:3])}, ...): train a classifier"
        )


def check_table_algorithm(algorithm: catalog.Algorithm, info: DatasetInfo, world_size: int) -> None:
    """Which deep networks read which tables: cnn reads images only, lstm a sequence (a
    text column's words), the autoencoder reconstructs numbers, not words. The worker
    checks again (a standalone job has no server in front)."""
    texts = [c["name"] for c in info.columns if c.get("kind") == "text"]
    if algorithm.name == "cnn" or (algorithm.name == "lstm" and not texts):
        raise InvalidArgument(
            f"{algorithm.name} reads image or sequence rows; {info.name} is a table of "
            "columns without text: train mlp or autoencoder (or a classical algorithm) on it"
        )
    if texts and algorithm.name == "autoencoder":
        raise InvalidArgument(
            f"the autoencoder reconstructs numbers; {info.name} has text columns "
            f"({', '.join(texts)}): train mlp or lstm on it, or give them kind ignored"
        )
    if texts and algorithm.paradigm == "deep" and world_size > 1:
        raise InvalidArgument(
            f"{info.name} has text columns: deep models of text train in one process "
            "(world_size 1) for now"
        )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_train_size(train_size: int, task: str, n_classes: int) -> None:
    """Refuses a train_size that cannot make a model; one larger than the split means all."""
    if train_size < 0:
        raise InvalidArgument(f"train_size {train_size} is negative; use 0 for all rows")
    if train_size == 0:
        return
    # Every class keeps a row in the subsample, and a classifier needs two classes.
    least = max(2, n_classes) if task == "classification" else 2
    if train_size < least:
        what = f"the dataset's {n_classes} classes" if task == "classification" else "a fit"
        raise InvalidArgument(
            f"train_size {train_size} is too small for {what}: use at least {least} (or 0 "
            "for the whole training split)"
        )


def _check_world_size(world_size: int, algorithm: catalog.Algorithm, most: int) -> int:
    """The number of training processes a request asks for: 0 and 1 both mean one."""
    if world_size < 0:
        raise InvalidArgument(
            f"world_size {world_size} is negative; use 0 or 1 for one process, or 2 to "
            f"{most} for distributed (DDP) training"
        )
    if world_size <= 1:
        return 1
    if algorithm.paradigm != "deep":
        raise InvalidArgument(
            f"world_size {world_size} needs a deep algorithm: {algorithm.name} is "
            f"{algorithm.paradigm} and trains in one process; use world_size 0 or 1"
        )
    if world_size > most:
        raise InvalidArgument(
            f"world_size {world_size} is more than this server allows: at most {most} "
            "processes per job (PARADIGM_MAX_WORLD_SIZE)"
        )
    return world_size

"""A training job's rows: its dataset loaded, checked, split into train and test rows, and
the training rows subsampled to the job's train_size.

Pure functions of the spec: every DDP rank of a multi-machine job (standalone.py) loads its
own copy and gets the same rows, and Explain (importance.py) calls split again to score the
very test rows of a job.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.datasets import layout
from service.datasets.schema import ColumnInfo
from service.errors import InvalidArgument
from service.training import catalog, validation
from service.training.spec import TrainingSpec
from service.worker.fitting import TextLayout


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
    #: Table and image datasets: the raw rows and their front end (X_* are its output).
    raw: RawInputs | None = None
    #: Deep models of a table with text columns: where X_*'s token ids are.
    text: TextLayout | None = None


@dataclass
class RawInputs:
    """What a table or image dataset's model needs beyond the feature matrix.

    Models fit on the front end's matrix with class indices as labels; the exported graph
    takes the raw columns or pixels (the front end's graph joined in front) and answers the
    classes themselves.
    """

    #: columns.Preprocessor or image_inputs.ImageFront (both import onnx).
    preprocessor: Any
    #: The raw test rows (training rows where none are held out), for parity:
    #: columns.Columns or image_inputs.ImageRows.
    parity_rows: Any
    #: Classification: the classes (names or numbers) that the label indices stand for.
    class_values: np.ndarray | None
    seconds: float


def _table_training_data(
    spec: TrainingSpec,
    info: layout.DatasetInfo,
    algorithm: catalog.Algorithm,
    params: dict[str, Any],
    task: str,
) -> TrainingData:
    from service.worker import columns as table_columns
    from service.worker.datasets import tabular

    table = tabular.load_table(Path(spec.dataset_dir))
    raw = table_columns.read_columns(table, [ColumnInfo.from_dict(c) for c in info.columns])
    texts = [s.name for s in raw.specs if s.kind == "text"]
    validation.check_table_algorithm(algorithm, info, spec.world_size)
    label = table.column(info.label_column).to_numpy(zero_copy_only=False)
    class_values = None
    if task == "classification":
        class_values, y = np.unique(label, return_inverse=True)
        y = y.astype(np.int64)
    elif task == "anomaly_detection":  # learns the rows themselves: the labels stay unused
        y = np.zeros(len(label), dtype=np.float64)
    elif label.dtype.kind in "OUS":
        raise InvalidArgument(
            f"{info.name}'s labels are class names: {algorithm.name} cannot do {task} on them"
        )
    else:
        y = label.astype(np.float64)
    # A table of numbers keeps the one "input" of array datasets unless asked otherwise.
    matrix = not spec.column_inputs and all(s.kind == "numeric" for s in raw.specs)
    # Text: TF-IDF for classical models, token ids that deep ones learn vectors for.
    tokens = None
    if texts and algorithm.paradigm == "deep":
        tokens = table_columns.TokenSettings(
            int(params["vocabulary_size"]), int(params["max_tokens"])
        )
    preprocessor = table_columns.Preprocessor(raw.specs, matrix=matrix, tokens=tokens)

    def fit(rows: np.ndarray) -> None:
        preprocessor.fit(raw.take(rows))

    data = _raw_training_data(
        spec, info, algorithm, params, task, y, class_values,
        front=preprocessor, fit=fit, rows=raw.take,
    )  # fmt: skip
    if tokens is not None:
        vocabularies = tuple(encoder.ids for encoder in preprocessor.encoders.values())
        data.text = TextLayout(preprocessor.dense_width, tokens.length, vocabularies)
    if params.get("distribution") == "auto":  # naive_bayes: word weights are for text
        words = bool(texts) and (len(data.X_train) == 0 or float(data.X_train.min()) >= 0.0)
        data.params = {**params, "distribution": "multinomial" if words else "gaussian"}
    return data


def _raw_training_data(
    spec: TrainingSpec,
    info: layout.DatasetInfo,
    algorithm: catalog.Algorithm,
    params: dict[str, Any],
    task: str,
    y: np.ndarray,
    class_values: np.ndarray | None,
    *,
    front: Any,
    fit: Callable[[np.ndarray], None],
    rows: Callable[[np.ndarray], Any],
) -> TrainingData:
    """Splits a raw dataset (a table, images) by row, fits its `front` (the preprocessing
    the exported graph will begin with) on the training rows, and makes the feature rows
    the models fit on. `rows(indices)` selects raw rows as `front.transform` takes them."""
    train_rows, test_rows, y_train, y_test = split(
        np.arange(len(y)), y, task, spec.test_fraction, spec.seed
    )
    train_rows, y_train = subsample(train_rows, y_train, task, spec.train_size, spec.seed)
    started = time.perf_counter()
    fit(train_rows)
    X_train = front.transform(rows(train_rows))
    X_test = front.transform(rows(test_rows))
    seconds = time.perf_counter() - started
    parity_rows = rows(test_rows if len(test_rows) else train_rows)
    return TrainingData(
        info=info,
        algorithm=algorithm,
        params=params,
        task=task,
        n_features=X_train.shape[1],
        X_train=X_train,
        X_test=X_test,
        y_train=y_train,
        y_test=y_test,
        classes=np.unique(y_train) if task == "classification" else None,
        label_range=None,
        raw=RawInputs(front, parity_rows, class_values, seconds),
    )


def _image_training_data(
    spec: TrainingSpec,
    info: layout.DatasetInfo,
    algorithm: catalog.Algorithm,
    params: dict[str, Any],
    task: str,
) -> TrainingData:
    from service.worker import image_inputs

    images, y = layout.load_arrays(Path(spec.dataset_dir))
    class_values = None
    if task == "classification":
        class_values = np.array([c["value"] for c in info.classes], dtype=object)
    elif task == "anomaly_detection":  # learns the pixels themselves: the labels stay unused
        y = np.zeros(len(y), dtype=np.int64)
    else:
        raise InvalidArgument(
            f"{info.name}'s labels are class names: {algorithm.name} cannot do {task} on them"
        )
    front = image_inputs.ImageFront(info.image_shape, spec.image_features or "pixels")
    return _raw_training_data(
        spec, info, algorithm, params, task, y, class_values,
        front=front, fit=lambda rows: None, rows=lambda rows: image_inputs.ImageRows(images[rows]),
    )  # fmt: skip


def load_training_data(spec: TrainingSpec) -> TrainingData:
    """Loads and splits the job's dataset: the same rows for the same spec, so every DDP
    rank of a multi-machine job (standalone.py) can load its own copy."""
    dataset_dir = Path(spec.dataset_dir)
    info = layout.read_info(dataset_dir)
    algorithm = catalog.get_algorithm(spec.algorithm)
    params = catalog.resolve_hyperparameters(algorithm, spec.hyperparameters)
    task = spec.task or catalog.resolve_task(algorithm, info.task)
    if task not in algorithm.tasks:
        raise InvalidArgument(f"{algorithm.name} cannot do {task}; it supports {algorithm.tasks}")
    if info.is_table:
        return _table_training_data(spec, info, algorithm, params, task)
    if info.is_images:
        return _image_training_data(spec, info, algorithm, params, task)
    X, y = layout.load_arrays(dataset_dir)
    if not np.all(np.isfinite(X)):
        raise InvalidArgument("the dataset's features hold NaN or infinite values")
    y = targets(y, task)
    X_train, X_test, y_train, y_test = split(X, y, task, spec.test_fraction, spec.seed)
    # After the split: the test rows are the same whatever train_size, so a learning
    # curve's points are scored on one test set.
    X_train, y_train = subsample(X_train, y_train, task, spec.train_size, spec.seed)
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


def subsample(
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
    """The dataset's targets as `task` learns them: int64 labels, or float64 values."""
    if task == "classification":
        if np.issubdtype(y.dtype, np.floating) and not np.all(np.equal(np.mod(y, 1), 0)):
            raise InvalidArgument(
                "classification needs integer class labels, but the dataset's targets have "
                "fractional values; train a regression instead"
            )
        return y.astype(np.int64)
    return y.astype(np.float64)

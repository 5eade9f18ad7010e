"""The algorithm catalog: every trainable algorithm, its tasks and hyperparameters, in one place.

The serving process imports this to validate StartTraining requests before a worker is spawned,
so it imports nothing heavy: the standard library and service.errors only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from service.errors import InvalidArgument

TASKS = ("classification", "regression", "anomaly_detection")


@dataclass(frozen=True)
class Hyperparameter:
    """One tunable setting; minimum/maximum bound int and float values, choices a "choice"."""

    name: str
    type: Literal["int", "float", "choice", "bool"]
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    description: str = ""

    def allowed(self) -> str:
        """What a caller may send, in words, for error messages and listings."""
        if self.type == "choice":
            return "one of " + ", ".join(self.choices)
        if self.type == "bool":
            return "true or false"
        low = "-inf" if self.minimum is None else _number(self.minimum)
        high = "inf" if self.maximum is None else _number(self.maximum)
        kind = "an integer" if self.type == "int" else "a number"
        return f"{kind} in [{low}, {high}]"


@dataclass(frozen=True)
class Algorithm:
    """A trainable algorithm: its paradigm, the tasks it can do and its hyperparameters."""

    name: str
    paradigm: Literal["classical", "deep"]
    tasks: tuple[str, ...]
    description: str
    hyperparameters: tuple[Hyperparameter, ...]

    def hyperparameter(self, name: str) -> Hyperparameter | None:
        return next((h for h in self.hyperparameters if h.name == name), None)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _int(name: str, default: int, low: int, high: int, description: str) -> Hyperparameter:
    return Hyperparameter(name, "int", default, low, high, description=description)


def _float(name: str, default: float, low: float, high: float, description: str) -> Hyperparameter:
    return Hyperparameter(name, "float", default, low, high, description=description)


def _choice(name: str, default: str, choices: tuple[str, ...], description: str) -> Hyperparameter:
    return Hyperparameter(name, "choice", default, choices=choices, description=description)


_MAX_DEPTH = _int("max_depth", 0, 0, 1000, "Deepest a tree may grow; 0 means unlimited.")
_MIN_SAMPLES_LEAF = _int(
    "min_samples_leaf", 1, 1, 10000, "Fewest training samples a leaf may hold; more smooths."
)

# Shared by every deep algorithm; deep.py reads them by these names.
_DEEP_COMMON = (
    _int("epochs", 15, 1, 1000, "Full passes over the training data."),
    _int("batch_size", 128, 1, 65536, "Samples per gradient step."),
    _float("learning_rate", 1e-3, 1e-6, 1.0, "Step size of the optimizer."),
    _choice("optimizer", "rmsprop", ("rmsprop", "adam", "sgd"), "Gradient descent variant."),
    _float(
        "validation_split",
        0.25,
        0.0,
        0.9,
        "Fraction of the training data held back to report validation loss each epoch.",
    ),
    _choice(
        "precision",
        "fp32",
        ("fp32", "bf16"),
        "Arithmetic of the training forward pass and loss: fp32, or bf16 autocast (mixed "
        "precision; weights, optimizer and the exported model stay fp32).",
    ),
)

# mlp and lstm on a table with text columns: the words' own learned representation.
_TEXT_INPUTS = (
    _int("embedding_dim", 32, 1, 1024, "Text columns: size of each word's learned vector."),
    _int("max_tokens", 64, 1, 4096, "Text columns: words of a text read; the rest is cut."),
    _int(
        "vocabulary_size",
        20000,
        3,
        1_000_000,
        "Text columns: ids for the commonest training words, padding and unknown words.",
    ),
)

_CLASSICAL = (
    Algorithm(
        "linear_regression",
        "classical",
        ("regression",),
        "Ordinary least squares (scikit-learn LinearRegression).",
        (
            Hyperparameter(
                "fit_intercept", "bool", True, description="Learn a constant offset term."
            ),
        ),
    ),
    Algorithm(
        "ridge",
        "classical",
        ("regression",),
        "Least squares with an L2 penalty on the weights (scikit-learn Ridge).",
        (_float("alpha", 1.0, 0.0, 1e6, "Strength of the L2 penalty; 0 is plain least squares."),),
    ),
    Algorithm(
        "logistic_regression",
        "classical",
        ("classification",),
        "Multinomial logistic regression on standardized features.",
        (
            _float("C", 1.0, 1e-6, 1e6, "Inverse regularization strength; smaller is stronger."),
            _int("max_iter", 1000, 1, 100000, "Most solver iterations before giving up."),
        ),
    ),
    Algorithm(
        "decision_tree",
        "classical",
        ("classification", "regression"),
        "A single CART decision tree.",
        (_MAX_DEPTH, _MIN_SAMPLES_LEAF),
    ),
    Algorithm(
        "random_forest",
        "classical",
        ("classification", "regression"),
        "An averaged ensemble of decision trees grown on bootstrap samples.",
        (
            _int("n_estimators", 100, 1, 2000, "Number of trees."),
            _MAX_DEPTH,
            _MIN_SAMPLES_LEAF,
        ),
    ),
    Algorithm(
        "gradient_boosting",
        "classical",
        ("classification", "regression"),
        "Histogram-based gradient boosted trees (scikit-learn HistGradientBoosting*).",
        (
            _int("max_iter", 100, 1, 5000, "Boosting rounds (trees per class)."),
            _float("learning_rate", 0.1, 1e-4, 1.0, "Shrinkage applied to each tree."),
            _int("max_leaf_nodes", 31, 2, 1024, "Most leaves per tree."),
            _MAX_DEPTH,
        ),
    ),
    Algorithm(
        "svm",
        "classical",
        ("classification", "regression"),
        "Support vector machine (SVC with Platt probabilities, or SVR) on standardized features.",
        (
            _float("C", 1.0, 1e-6, 1e6, "Penalty on margin violations; larger fits tighter."),
            _choice("kernel", "rbf", ("rbf", "linear", "poly", "sigmoid"), "Kernel function."),
            _float("gamma", 0.0, 0.0, 1e3, "Kernel coefficient; 0 means 'scale' (1/(n*var))."),
        ),
    ),
    Algorithm(
        "naive_bayes",
        "classical",
        ("classification",),
        "Naive Bayes: independent features per class, normal (Gaussian) or word weights "
        "(multinomial, for text).",
        (
            _float(
                "var_smoothing",
                1e-9,
                0.0,
                1.0,
                "Fraction of the largest feature variance added to all variances.",
            ),
            _choice(
                "distribution",
                "auto",
                ("auto", "gaussian", "multinomial"),
                "Per-class feature distribution; auto: multinomial on a table with text "
                "columns (when no feature is negative), gaussian otherwise.",
            ),
        ),
    ),
    Algorithm(
        "knn",
        "classical",
        ("classification", "regression"),
        "k-nearest neighbours on standardized features.",
        (
            _int("n_neighbors", 5, 1, 1000, "Neighbours that vote."),
            _choice(
                "weights",
                "uniform",
                ("uniform", "distance"),
                "Equal votes, or votes weighted by inverse distance.",
            ),
        ),
    ),
)

_DEEP = (
    Algorithm(
        "mlp",
        "deep",
        ("classification", "regression"),
        "Fully connected network: ReLU hidden layers with dropout (text columns: the mean "
        "of their words' learned vectors first).",
        (
            *_DEEP_COMMON,
            _int("hidden_units", 128, 1, 4096, "Units per hidden layer."),
            _int("hidden_layers", 2, 1, 16, "Number of hidden layers."),
            _float("dropout", 0.2, 0.0, 0.9, "Dropout rate after each hidden layer."),
            *_TEXT_INPUTS,
        ),
    ),
    Algorithm(
        "cnn",
        "deep",
        ("classification",),
        "Convolutional network for images: Conv-tanh, MaxPool, Conv-tanh, MaxPool, Dropout, "
        "Dense ('same' padding).",
        (
            *_DEEP_COMMON,
            _int("filters_1", 64, 1, 1024, "Filters of the first convolution."),
            _int("filters_2", 128, 1, 1024, "Filters of the second convolution."),
            _int("kernel_size", 3, 1, 7, "Side of the square convolution kernels."),
            _float("dropout", 0.5, 0.0, 0.9, "Dropout rate before the dense layer."),
        ),
    ),
    Algorithm(
        "lstm",
        "deep",
        ("classification", "regression"),
        "LSTM over a sequence: image rows as time steps, a text column's words, otherwise "
        "one feature per step.",
        (
            *_DEEP_COMMON,
            _int("hidden_units", 64, 1, 2048, "Size of the LSTM hidden state."),
            _int("num_layers", 1, 1, 8, "Stacked LSTM layers."),
            _float("dropout", 0.0, 0.0, 0.9, "Dropout between stacked layers and before the head."),
            *_TEXT_INPUTS,
        ),
    ),
    Algorithm(
        "autoencoder",
        "deep",
        ("anomaly_detection",),
        "Dense autoencoder; the anomaly score is the per-sample reconstruction error.",
        (
            *_DEEP_COMMON,
            _int("hidden_units", 64, 1, 4096, "Units of the encoder and decoder hidden layers."),
            _int("bottleneck_units", 8, 1, 1024, "Size of the compressed code."),
        ),
    ),
)

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (*_CLASSICAL, *_DEEP)}


def get_algorithm(name: str) -> Algorithm:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise InvalidArgument(
            f"unknown algorithm {name!r}; expected one of: {', '.join(ALGORITHMS)}"
        ) from None


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _coerce(algorithm: Algorithm, spec: Hyperparameter, value: Any) -> Any:
    """Returns value as spec's type, or raises InvalidArgument saying what is allowed."""

    def bad(reason: str = "") -> InvalidArgument:
        detail = f" ({reason})" if reason else ""
        return InvalidArgument(
            f"hyperparameter {spec.name!r} of {algorithm.name} got {value!r}{detail}; "
            f"expected {spec.allowed()}"
        )

    if spec.type == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad()
    if spec.type == "choice":
        # Choices are matched exactly; "RBF" is not "rbf" to scikit-learn either.
        if isinstance(value, str) and value.strip() in spec.choices:
            return value.strip()
        raise bad()

    # bool is an int subclass in Python; True for n_estimators is a caller's mistake.
    if isinstance(value, bool):
        raise bad("a boolean is not a number")
    number: int | float
    if spec.type == "int":
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:
                raise bad() from None
        else:
            raise bad()
    else:
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise bad() from None
        else:
            raise bad()
        if not math.isfinite(number):
            raise bad()
    if spec.minimum is not None and number < spec.minimum:
        raise bad("below the minimum")
    if spec.maximum is not None and number > spec.maximum:
        raise bad("above the maximum")
    return number


def resolve_hyperparameters(algorithm: Algorithm, given: Mapping[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of algorithm, typed and range-checked, defaults filled in."""
    known = {h.name for h in algorithm.hyperparameters}
    unknown = sorted(set(given) - known)
    if unknown:
        valid = ", ".join(h.name for h in algorithm.hyperparameters) or "(none)"
        raise InvalidArgument(
            f"unknown hyperparameter(s) {', '.join(map(repr, unknown))} for "
            f"{algorithm.name}; valid: {valid}"
        )
    return {
        h.name: _coerce(algorithm, h, given[h.name]) if h.name in given else h.default
        for h in algorithm.hyperparameters
    }


def resolve_task(algorithm: Algorithm, dataset_task: str, requested: str = "") -> str:
    """The task a job does: the requested one, else the dataset's, else the algorithm's first.

    linear_regression on the classification dataset digits is regression (as the guide does);
    classification on continuous targets is refused either way.
    """
    if requested:
        if requested not in TASKS:
            raise InvalidArgument(
                f"unknown task {requested!r}; expected one of: {', '.join(TASKS)}"
            )
        if requested not in algorithm.tasks:
            raise InvalidArgument(
                f"{algorithm.name} cannot do {requested}; it supports: {', '.join(algorithm.tasks)}"
            )
        task = requested
    else:
        task = dataset_task if dataset_task in algorithm.tasks else algorithm.tasks[0]
    if task == "classification" and dataset_task == "regression":
        raise InvalidArgument(
            f"{algorithm.name} would do classification, which needs class labels, but the "
            "dataset's targets are continuous (a regression dataset); choose an algorithm "
            f"that supports regression ({', '.join(_regressors())})"
        )
    return task


def _regressors() -> list[str]:
    return [a.name for a in ALGORITHMS.values() if "regression" in a.tasks]

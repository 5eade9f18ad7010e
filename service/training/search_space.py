"""What a search samples for each catalog algorithm: ranges a few trials can explore.

The catalog's bounds say what is valid (n_estimators up to 2000, epochs up to 1000); a
search needs what is worth trying in a budget of small trials, on a log scale where the
setting acts multiplicatively. Hyperparameters left out keep their catalog default.
Standard library only: the serving process samples, workers train.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from service.training import catalog


@dataclass(frozen=True)
class Dimension:
    """One sampled hyperparameter: an int or float range, or a set of choices."""

    name: str
    kind: Literal["int", "float", "choice"]
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[str, ...] = ()


def _int(name: str, low: int, high: int, *, log: bool = False) -> Dimension:
    return Dimension(name, "int", low, high, log)


def _float(name: str, low: float, high: float, *, log: bool = False) -> Dimension:
    return Dimension(name, "float", low, high, log)


def _choice(name: str, *choices: str) -> Dimension:
    return Dimension(name, "choice", choices=choices)


# Deep trials stay short: a search prunes and compares, a long run comes after it.
_DEEP = (
    _int("epochs", 5, 30),
    _int("batch_size", 16, 256, log=True),
    _float("learning_rate", 1e-4, 3e-2, log=True),
    _choice("optimizer", "adam", "rmsprop"),
)

SPACES: dict[str, tuple[Dimension, ...]] = {
    "linear_regression": (),
    "ridge": (_float("alpha", 1e-4, 1e3, log=True),),
    "logistic_regression": (_float("C", 1e-3, 1e3, log=True),),
    "decision_tree": (_int("max_depth", 1, 20), _int("min_samples_leaf", 1, 20, log=True)),
    "random_forest": (
        _int("n_estimators", 10, 200, log=True),
        _int("max_depth", 2, 20),
        _int("min_samples_leaf", 1, 10, log=True),
    ),
    "gradient_boosting": (
        _int("max_iter", 20, 300, log=True),
        _float("learning_rate", 0.01, 0.5, log=True),
        _int("max_leaf_nodes", 4, 64, log=True),
    ),
    "svm": (_float("C", 1e-2, 1e3, log=True), _choice("kernel", "rbf", "linear")),
    "naive_bayes": (_float("var_smoothing", 1e-12, 1e-3, log=True),),
    "knn": (_int("n_neighbors", 1, 30, log=True), _choice("weights", "uniform", "distance")),
    "mlp": (
        *_DEEP,
        _int("hidden_units", 16, 256, log=True),
        _int("hidden_layers", 1, 3),
        _float("dropout", 0.0, 0.5),
    ),
    "cnn": (*_DEEP, _int("filters_1", 8, 64, log=True), _int("filters_2", 16, 128, log=True)),
    "lstm": (*_DEEP, _int("hidden_units", 16, 128, log=True), _int("num_layers", 1, 2)),
    "autoencoder": (
        *_DEEP,
        _int("hidden_units", 16, 128, log=True),
        _int("bottleneck_units", 2, 16, log=True),
    ),
}


def space(algorithm: str) -> tuple[Dimension, ...]:
    """The dimensions sampled for a catalog algorithm (none: its defaults only)."""
    return SPACES.get(algorithm, ())


def _check() -> None:
    """Every dimension names a hyperparameter of its algorithm, inside the catalog's bounds
    (run at import: a catalog change that breaks a space fails at once)."""
    for name, dimensions in SPACES.items():
        algorithm = catalog.ALGORITHMS[name]
        for dimension in dimensions:
            spec = algorithm.hyperparameter(dimension.name)
            assert spec is not None, f"{name}: no hyperparameter {dimension.name}"
            if dimension.kind == "choice":
                assert set(dimension.choices) <= set(spec.choices), (name, dimension)
            else:
                assert spec.minimum is None or dimension.low >= spec.minimum, (name, dimension)
                assert spec.maximum is None or dimension.high <= spec.maximum, (name, dimension)


_check()

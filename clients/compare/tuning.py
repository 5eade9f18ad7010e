"""Hyperparameter spaces from the catalog: how big each is, and a random sample of it.

Size of a space (the report's "Tuning" measure), from ListAlgorithms and nothing else:
- `dims`: how many hyperparameters the algorithm exposes;
- `continuous`: how many of them are floats (an unbounded number of values);
- `discrete`: the product of the value counts of the rest (choices: their number; booleans:
  2; integers: maximum - minimum + 1 of the catalog range), reported as log10.

The random search samples the catalog's ranges intersected with a *budget box* (BOX below):
a 2-core CPU cannot afford 1000 epochs or 4096 hidden units per trial, so the cost-driving
integers are capped, and ranges spanning two decades or more are sampled log-uniformly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: name -> (low, high): the part of the catalog range the search samples.
BOX: dict[str, tuple[float, float]] = {
    "epochs": (5, 30),
    "batch_size": (16, 256),
    "learning_rate": (1e-4, 1e-1),
    "validation_split": (0.0, 0.3),
    "hidden_units": (16, 512),
    "hidden_layers": (1, 4),
    "num_layers": (1, 3),
    "dropout": (0.0, 0.5),
    "filters_1": (8, 64),
    "filters_2": (16, 128),
    "bottleneck_units": (2, 64),
    "n_estimators": (10, 300),
    "max_iter": (50, 2000),
    "max_depth": (0, 32),
    "min_samples_leaf": (1, 20),
    "max_leaf_nodes": (2, 128),
    "C": (1e-3, 1e3),
    "gamma": (1e-4, 10.0),
    "alpha": (1e-4, 1e3),
    "var_smoothing": (1e-12, 1e-1),
    "n_neighbors": (1, 30),
}
#: A numeric range this wide (high / low) or wider is sampled log-uniformly.
LOG_RATIO = 100.0
#: How a model is computed, not what it learns (bf16 is a GPU speed knob): neither counted
#: in a space nor sampled, so every trial runs at the catalog default.
EXECUTION_SETTINGS = frozenset({"precision"})
#: How text columns are read (mlp and lstm's word vectors, naive_bayes's distribution, by
#: default chosen from the data): inert on a dataset without text, so not a dimension of
#: the search either; every trial runs at the catalog default.
TEXT_SETTINGS = frozenset({"embedding_dim", "max_tokens", "vocabulary_size", "distribution"})


def _tunable(algorithm: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    fixed = EXECUTION_SETTINGS | TEXT_SETTINGS
    return [h for h in algorithm.get("hyperparameters", []) if h["name"] not in fixed]


def space_size(algorithm: Mapping[str, Any]) -> dict[str, Any]:
    """dims, continuous, discrete configurations (log10) of one catalog algorithm."""
    params = _tunable(algorithm)
    continuous = 0
    log10_discrete = 0.0
    for h in params:
        kind = h["type"]
        if kind == "float":
            continuous += 1
        elif kind == "choice":
            log10_discrete += math.log10(max(1, len(h.get("choices") or [])))
        elif kind == "bool":
            log10_discrete += math.log10(2)
        elif kind == "int":
            low, high = h.get("minimum"), h.get("maximum")
            if low is None or high is None:
                continuous += 1  # unbounded integers: as good as continuous
            else:
                log10_discrete += math.log10(max(1.0, high - low + 1))
    return {
        "dims": len(params),
        "continuous": continuous,
        "log10_discrete": log10_discrete,
    }


def _bounds(h: Mapping[str, Any]) -> tuple[float, float]:
    low = h.get("minimum")
    high = h.get("maximum")
    low = -math.inf if low is None else float(low)
    high = math.inf if high is None else float(high)
    box_low, box_high = BOX.get(h["name"], (low, high))
    low, high = max(low, box_low), min(high, box_high)
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"no finite search range for {h['name']!r} ({low}, {high})")
    return low, high


class _LogInt:
    """Integers drawn log-uniformly from [low, high] (ParameterSampler calls rvs)."""

    def __init__(self, low: int, high: int) -> None:
        from scipy import stats

        self.low, self.high = low, high
        self._dist = stats.loguniform(low, high + 1)

    def rvs(self, random_state: Any = None) -> int:
        value = math.floor(float(self._dist.rvs(random_state=random_state)))
        return min(self.high, max(self.low, value))


def distributions(algorithm: Mapping[str, Any]) -> dict[str, Any]:
    """ParameterSampler distributions over the catalog ranges, inside the budget box."""
    from scipy import stats

    space: dict[str, Any] = {}
    for h in _tunable(algorithm):
        name, kind = h["name"], h["type"]
        if kind == "choice":
            space[name] = list(h.get("choices") or [h["default"]])
        elif kind == "bool":
            space[name] = [True, False]
        elif kind == "int":
            low, high = (round(b) for b in _bounds(h))
            if low >= 1 and high / low >= LOG_RATIO:
                space[name] = _LogInt(low, high)
            else:
                space[name] = stats.randint(low, high + 1)
        elif kind == "float":
            low_f, high_f = _bounds(h)
            if low_f > 0 and high_f / low_f >= LOG_RATIO:
                space[name] = stats.loguniform(low_f, high_f)
            else:
                space[name] = stats.uniform(low_f, high_f - low_f)
    return space


def describe_box(algorithm: Mapping[str, Any]) -> dict[str, str]:
    """The sampled range of each hyperparameter, in words, for the report."""
    described: dict[str, str] = {}
    for h in _tunable(algorithm):
        if h["type"] in ("choice", "bool"):
            values = h.get("choices") or ["true", "false"]
            described[h["name"]] = "{" + ", ".join(map(str, values)) + "}"
            continue
        low, high = _bounds(h)
        log = low > 0 and high / low >= LOG_RATIO
        described[h["name"]] = f"[{low:g}, {high:g}]{' log' if log else ''}"
    return described


def sample(algorithm: Mapping[str, Any], n: int, seed: int) -> list[dict[str, Any]]:
    """n random configurations as plain Python values (ints, floats, strings, bools)."""
    from sklearn.model_selection import ParameterSampler

    configs = []
    for config in ParameterSampler(distributions(algorithm), n_iter=n, random_state=seed):
        plain: dict[str, Any] = {}
        for key, value in config.items():
            value = value.item() if hasattr(value, "item") else value
            if isinstance(value, float):
                value = float(f"{value:.4g}")  # readable in the report, plenty for a search
            plain[key] = value
        configs.append(plain)
    return configs

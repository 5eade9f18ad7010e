"""What a compare run measured, as plain dataclasses that round-trip through JSON.

`Measurements` is everything: the report, the plots and the verdicts are computed from it
alone, so `--from-json results.json` can rebuild a report without a server.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

CLASSICAL, DEEP = "classical", "deep"
PARADIGMS = (CLASSICAL, DEEP)


@dataclass
class Run:
    """One training job: what was asked, what the server measured, what it cost."""

    purpose: str  # "curve", "tune", "hardware"
    dataset: str
    algorithm: str
    paradigm: str
    seed: int
    #: Requested training rows; 0 = the whole training split.
    size: int
    device_requested: str = "auto"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    trial: int = -1
    ok: bool = False
    error: str = ""
    job_id: str = ""
    model_name: str = ""
    model_version: str = ""
    #: Where the server trained it ("cpu", "cuda").
    device: str = ""
    task: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    #: The model's training cost: device_seconds, joules, dollars, energy_source.
    cost: dict[str, Any] = field(default_factory=dict)
    #: Worker wall seconds (job start to end, from the server's timestamps).
    worker_seconds: float = 0.0
    #: Pipeline stages the job reported ("preprocessing", "fitting", "epoch", ...).
    stages: list[str] = field(default_factory=list)
    #: What the job said in its "preprocessing" events, if any.
    preprocessing: list[str] = field(default_factory=list)

    @property
    def train_samples(self) -> int:
        return int(self.metrics.get("train_samples", 0))

    def score(self) -> float | None:
        """The figure the report ranks by: accuracy (classification), else R²."""
        for key in ("accuracy", "r2"):
            if key in self.metrics:
                return float(self.metrics[key])
        return None


#: A plan's algorithm may be a variant: "logistic_regression+hog" is logistic regression
#: on hand-made image features (StartTraining's image_features).
VARIANT = "+"


def base_algorithm(name: str) -> str:
    return name.partition(VARIANT)[0]


def image_features(name: str) -> str:
    return name.partition(VARIANT)[2]


@dataclass
class Measurements:
    meta: dict[str, Any] = field(default_factory=dict)
    #: ListAlgorithms, flattened: name, paradigm, tasks, hyperparameters (type, bounds...).
    catalog: list[dict[str, Any]] = field(default_factory=list)
    #: Per dataset: task, n_samples, n_features, n_classes, image_shape, n_train, ...
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    #: Per tuned algorithm: search seed, held-out seeds, the sampled box, the best trial.
    tuning: list[dict[str, Any]] = field(default_factory=list)
    #: Per explained model: model, paradigm, native_kind, features, seconds, cost ... or
    #: {"algorithm": ..., "error": ...} when Explain failed.
    explanations: list[dict[str, Any]] = field(default_factory=list)
    #: "points": one per (model, batch); "models": per-model serving cost per 1k predictions;
    #: "paradigms": per (paradigm, device) serving cost per 1k predictions.
    serving: dict[str, Any] = field(default_factory=dict)
    #: Per dataset: a cascade of its best classical then best deep model (compare/cascades.py).
    cascades: list[dict[str, Any]] = field(default_factory=list)
    #: "present": bool, "how": how it was found out.
    gpu: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=False, default=str) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurements:
        known = {f.name for f in fields(Run)}
        runs = [Run(**{k: v for k, v in r.items() if k in known}) for r in data.get("runs", [])]
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data and f.name != "runs"}
        return cls(runs=runs, **values)

    @classmethod
    def read(cls, path: Path) -> Measurements:
        return cls.from_dict(json.loads(path.read_text()))

    def algorithm(self, name: str) -> dict[str, Any] | None:
        """The catalog entry of an algorithm, or of a variant's ("logistic_regression+hog")."""
        base = base_algorithm(name)
        return next((a for a in self.catalog if a["name"] == base), None)

    def paradigm_of(self, algorithm: str) -> str:
        found = self.algorithm(algorithm)
        return str(found["paradigm"]) if found else ""

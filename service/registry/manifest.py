"""The manifest stored next to every model.onnx: what the model is and how it was made.

Pure standard library: written by training workers, read by the serving process.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"


@dataclass(frozen=True)
class TensorSpec:
    """A tensor of the model's signature; datatype is an OIP v2 string, -1 a free dim."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(name=data["name"], datatype=data["datatype"], shape=tuple(data["shape"]))


@dataclass
class Manifest:
    """Everything known about one model version.

    `paradigm` is "classical" or "deep"; `task` is "classification", "regression" or
    "anomaly_detection" ("" when unknown, for imports); metrics holds evaluation and timing
    figures (accuracy, f1_macro, rmse, r2, accuracy_rounded, fit_seconds,
    preprocessing_seconds, export_seconds, ...).
    """

    name: str
    version: str
    paradigm: str
    algorithm: str
    task: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    dataset: str = ""
    dataset_fingerprint: str = ""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    parity_max_abs_error: float = 0.0
    parameter_count: int = 0
    onnx_bytes: int = 0
    checksum: str = ""
    library_versions: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    training_device: str = ""
    classes: list[float] = field(default_factory=list)
    #: The classes as the model's "label" answers them, in the order of "probabilities":
    #: names for named classes, the numbers as text otherwise; [] for other tasks.
    class_names: list[str] = field(default_factory=list)
    #: Table models: one entry per input column, {"name", "kind", "categories"}: numeric
    #: inputs impute NaN, categorical ones know the categories seen in training (others
    #: encode as zeros and are counted), boolean ones take BOOL. [] for array models.
    input_columns: list[dict[str, Any]] = field(default_factory=list)
    #: What training cost: cpu_seconds, gpu_seconds, joules, dollars, energy_source.
    training_cost: dict[str, Any] = field(default_factory=dict)
    #: The job that published it: after a crash between publish and the job journal's
    #: last write, the restarted server finds the job's outcome here.
    job_id: str = ""
    #: Most training rows asked for (a learning-curve point); 0 means the whole training
    #: split. metrics["train_samples"] says how many were actually fitted on.
    train_size: int = 0
    #: The held-out split (seed and fraction), so Explain can score the same test rows;
    #: test_fraction 0 means unknown (imports, and models older than these fields).
    split_seed: int = 0
    test_fraction: float = 0.0
    #: One name per input feature, from the dataset ("x0", "x1", ... where it has none).
    feature_names: list[str] = field(default_factory=list)
    #: The model's own importance of each input feature, in input order: "coefficients"
    #: (|coef_|, summed over classes) or "feature_importances" (impurity, trees); "" and
    #: no values where the model has none (deep networks, naive Bayes, KNN, SVM kernels).
    native_kind: str = ""
    native_importances: list[float] = field(default_factory=list)
    #: Operator domains of the graph that ONNX Runtime runs on its CPU provider even in a
    #: CUDA session (["ai.onnx.ml"] for most scikit-learn exports; [] for none). Recorded
    #: when the model is made, so the serving process need not parse the graph (it never
    #: imports onnx); None where unknown (models older than this field).
    cpu_only_domains: list[str] | None = None
    #: The MLflow run the training job logged to; "" when tracking was off or the tracking
    #: server could not be reached when the model was published (service/tracking/).
    mlflow_run_id: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        data["inputs"] = [TensorSpec.from_dict(t) for t in data["inputs"]]
        data["outputs"] = [TensorSpec.from_dict(t) for t in data["outputs"]]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        return cls.from_dict(json.loads((directory / MANIFEST_FILE).read_text()))

    def write(self, directory: Path) -> None:
        (directory / MANIFEST_FILE).write_text(self.to_json())

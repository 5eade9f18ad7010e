"""Two published models scored on the same rows, through ONNX Runtime.

Runs in a spawned worker (entry.run_compare) for a promotion whose models were split
differently: each model's test split is rebuilt from its recorded seed and fraction (the
function training used), and only the rows that every model held out are scored, so
neither is scored on a row it was trained on.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.datasets import layout
from service.errors import DeadlineExceeded, InvalidArgument
from service.training.spec import CompareSpec

#: Fewer shared held-out rows than this compare nothing worth a promotion.
MIN_SHARED_ROWS = 10
CHUNK_ROWS = 1024


def compute(spec: CompareSpec) -> dict[str, Any]:
    """{"rows": shared rows scored, "scores": [one per model, in spec order]}."""
    import onnxruntime as ort

    from service.worker import training_data

    X, y = layout.load_arrays(Path(spec.dataset_dir))
    if not np.all(np.isfinite(X)):
        raise InvalidArgument("the dataset's features hold NaN or infinite values")
    y = training_data.targets(y, spec.task)
    shared: set[int] | None = None
    for seed, fraction in spec.splits:
        _, test_rows, _, _ = training_data.split(np.arange(len(y)), y, spec.task, fraction, seed)
        rows = {int(row) for row in test_rows}
        shared = rows if shared is None else shared & rows
    chosen = np.array(sorted(shared or ()), dtype=np.int64)
    if len(chosen) < MIN_SHARED_ROWS:
        raise InvalidArgument(
            f"only {len(chosen)} rows were held out from training by every model: too few "
            f"to compare them (at least {MIN_SHARED_ROWS}); train them with the same seed"
        )
    X, y = np.ascontiguousarray(X[chosen], dtype=np.float32), y[chosen]
    options = ort.SessionOptions()
    options.intra_op_num_threads = spec.blas_threads
    options.inter_op_num_threads = 1
    scores = []
    for path in spec.model_paths:
        session = ort.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        parts = []
        for start in range(0, len(X), CHUNK_ROWS):
            if time.time() > spec.deadline:
                raise DeadlineExceeded("the comparison did not finish within the deadline")
            (out,) = session.run([spec.output], {spec.input: X[start : start + CHUNK_ROWS]})
            parts.append(np.asarray(out).reshape(len(out), -1)[:, 0])
        scores.append(_score(spec.metric, y, np.concatenate(parts)))
    return {"rows": len(chosen), "scores": scores}


def _score(metric: str, y: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score, f1_score, r2_score

    if metric == "accuracy":
        return float(accuracy_score(y, predicted.astype(y.dtype)))
    if metric == "f1_macro":
        return float(f1_score(y, predicted.astype(y.dtype), average="macro"))
    if metric == "r2":
        value = float(r2_score(y, predicted))
        return value if math.isfinite(value) else 0.0
    if metric == "rmse":
        return float(math.sqrt(np.mean((y - predicted) ** 2)))
    raise InvalidArgument(f"metric {metric!r} cannot be computed here")

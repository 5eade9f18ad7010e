"""Permutation importance of a published model, scored through ONNX Runtime.

Runs in a spawned worker (entry.run_explain) for training/explain.py's Explainer: it
rebuilds the rows, wraps the ONNX model as a scikit-learn estimator and runs
sklearn.inspection.permutation_importance.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.datasets import layout
from service.errors import DeadlineExceeded, InvalidArgument
from service.training.spec import SCORING, ExplainSpec

#: Rows per ONNX Runtime call: a CNN's activations for 100 000 rows at once would need
#: gigabytes (64 channels per pixel), and the deadline is checked between calls.
CHUNK_ROWS = 1024


def compute(spec: ExplainSpec) -> dict[str, Any]:
    """Permutation importance of every input feature; runs in a worker process."""
    import onnxruntime as ort
    from sklearn.base import BaseEstimator
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import get_scorer

    from service.worker import training_data

    dataset_dir = Path(spec.dataset_dir)
    X, y = layout.load_arrays(dataset_dir)
    if not np.all(np.isfinite(X)):
        raise InvalidArgument("the dataset's features hold NaN or infinite values")
    y = training_data.targets(y, spec.task)
    if spec.same_split:
        _, X, _, y = training_data.split(X, y, spec.task, spec.test_fraction, spec.split_seed)
    if len(X) > spec.max_rows:
        chosen = np.random.default_rng(spec.seed).choice(len(X), spec.max_rows, replace=False)
        chosen.sort()
        X, y = X[chosen], y[chosen]
    if len(X) < 2:
        raise InvalidArgument(f"{len(X)} rows to score: an explanation needs at least 2")

    options = ort.SessionOptions()
    options.intra_op_num_threads = spec.blas_threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        spec.model_path, sess_options=options, providers=["CPUExecutionProvider"]
    )

    # Defined here because scikit-learn is imported here: permutation_importance wants an
    # estimator it can tag (a BaseEstimator) with fit and predict, and nothing more.
    class OnnxEstimator(BaseEstimator):  # type: ignore[misc]
        """The served model as scikit-learn sees it: fit does nothing, predict runs ORT."""

        def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> OnnxEstimator:
            return self

        def predict(self, X: np.ndarray) -> np.ndarray:
            X = np.ascontiguousarray(X, dtype=np.float32)
            parts = []
            for start in range(0, len(X), CHUNK_ROWS):
                # permutation_importance has no callback; predict runs once per feature and
                # repeat, so this is where a worker past its deadline stops.
                if time.time() > spec.deadline:
                    raise DeadlineExceeded("the explanation did not finish within the deadline")
                (out,) = session.run([spec.output], {spec.input: X[start : start + CHUNK_ROWS]})
                parts.append(np.asarray(out).reshape(len(out), -1)[:, 0])
            return np.concatenate(parts)

    metric = SCORING[spec.task][0]
    estimator = OnnxEstimator()
    baseline = float(get_scorer(metric)(estimator, X, y))
    result = permutation_importance(
        estimator, X, y, scoring=metric, n_repeats=spec.n_repeats, random_state=spec.seed
    )
    return {
        "rows": len(X),
        "metric": metric,
        "baseline": baseline,
        "mean": [_finite(v) for v in result.importances_mean],
        "std": [_finite(v) for v in result.importances_std],
    }


def _finite(value: float) -> float:
    # r2 of a constant target is NaN; JSON and the proto's reader both want a number.
    value = float(value)
    return value if math.isfinite(value) else 0.0

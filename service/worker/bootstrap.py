"""Confidence intervals of held-out metrics: a percentile bootstrap over the test rows.

The test rows are a sample; a model's accuracy on them is an estimate. Resampling those
rows with replacement and scoring each resample gives the spread of that estimate, so a
leaderboard can say whether two models differ by more than the luck of the split.
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 1000
#: A 95 % interval.
ALPHA = 0.05
#: Resamples scored at once: (chunk, rows) indices stay a few MB on large test sets.
_CHUNK = 100


def intervals(
    task: str, y_test: np.ndarray, outputs: dict[str, np.ndarray], seed: int
) -> dict[str, float]:
    """{metric}_ci_low and {metric}_ci_high for the task's metrics (accuracy and f1_macro,
    or rmse and r2); empty for anomaly detection or fewer than two test rows."""
    n = len(y_test)
    if n < 2 or task not in ("classification", "regression"):
        return {}
    rng = np.random.default_rng(seed)
    scores: dict[str, list[np.ndarray]] = {}
    for start in range(0, RESAMPLES, _CHUNK):
        rows = rng.integers(0, n, size=(min(_CHUNK, RESAMPLES - start), n))
        if task == "classification":
            chunk = _classification(np.asarray(y_test), np.asarray(outputs["label"]), rows)
        else:
            prediction = outputs["prediction"].reshape(n, -1)[:, 0].astype(np.float64)
            chunk = _regression(np.asarray(y_test, dtype=np.float64), prediction, rows)
        for name, values in chunk.items():
            scores.setdefault(name, []).append(values)
    bounds = {}
    for name, parts in scores.items():
        values = np.concatenate(parts)
        values = values[np.isfinite(values)]
        if len(values):
            low, high = np.quantile(values, [ALPHA / 2, 1 - ALPHA / 2])
            bounds[f"{name}_ci_low"], bounds[f"{name}_ci_high"] = float(low), float(high)
    return bounds


def _classification(y: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    # Classes as scikit-learn's f1_score sees them: those of the truth and the guesses.
    classes, codes = np.unique(np.concatenate([y, labels]), return_inverse=True)
    y_codes, label_codes = codes[: len(y)], codes[len(y) :]
    truth, guess = y_codes[rows], label_codes[rows]
    k = len(classes)
    # One confusion matrix per resample, by one bincount over (resample, truth, guess).
    resample = np.arange(len(rows))[:, None]
    cells = (resample * k + truth) * k + guess
    confusion = np.bincount(cells.ravel(), minlength=len(rows) * k * k).reshape(len(rows), k, k)
    true_positive = confusion[:, np.arange(k), np.arange(k)]
    actual = confusion.sum(axis=2)
    predicted = confusion.sum(axis=1)
    denominator = actual + predicted
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denominator > 0, 2 * true_positive / np.maximum(denominator, 1), 0.0)
    # Macro F1 over the classes present in the resample's truth or guesses, as
    # scikit-learn computes it over the labels it sees.
    present = denominator > 0
    f1_macro = (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    return {"accuracy": true_positive.sum(axis=1) / rows.shape[1], "f1_macro": f1_macro}


def _regression(y: np.ndarray, prediction: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    truth, guess = y[rows], prediction[rows]
    squared = ((truth - guess) ** 2).sum(axis=1)
    spread = ((truth - truth.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(spread > 0, 1.0 - squared / spread, np.nan)
    return {"rmse": np.sqrt(squared / truth.shape[1]), "r2": r2}

"""A search's leaderboard: the best trial of each algorithm with its held-out metric and
confidence interval, its training bill, its size, and its serving bill; and the Pareto
front of metric against serving cost."""

from __future__ import annotations

import math
from typing import Any

from service.training.search_record import SearchRecord, TrialRecord

#: The serving cost the Pareto front is drawn against: dollars per 1 000 at this batch.
PARETO_BATCH = 1


def winners(record: SearchRecord) -> list[TrialRecord]:
    """The best succeeded trial of each algorithm, best first."""
    best = []
    for algorithm in record.algorithms:
        trial = record.best([t for t in record.trials if t.algorithm == algorithm])
        if trial is not None:
            best.append(trial)
    sign = -1.0 if record.maximize else 1.0
    return sorted(best, key=lambda t: (sign * float(t.value or 0.0), t.number))


def entry(
    record: SearchRecord,
    trial: TrialRecord,
    *,
    model_bytes: int,
    serving: dict[str, Any] | None,
    serving_error: str = "",
) -> dict[str, Any]:
    """One leaderboard row (LeaderboardEntry's fields) for a trial."""
    value = float(trial.value if trial.value is not None else math.nan)
    metrics = trial.metrics
    return {
        "algorithm": trial.algorithm,
        "paradigm": trial.paradigm,
        "trial": trial.number,
        "model_name": trial.model_name,
        "model_version": trial.model_version,
        "value": value,
        # The worker's bootstrap over the test rows (pipeline.py); the value itself where
        # a model reports none (the interval is then unknown, not zero).
        "ci_low": float(metrics.get(f"{record.metric}_ci_low", value)),
        "ci_high": float(metrics.get(f"{record.metric}_ci_high", value)),
        "fit_seconds": float(metrics.get("fit_seconds", 0.0)),
        "training_device_seconds": trial.device_seconds,
        "training_joules": trial.joules,
        "training_dollars": trial.dollars,
        "model_bytes": int(model_bytes),
        "serving": _serving_rows(serving),
        "serving_error": serving_error,
        "hyperparameters": dict(trial.hyperparameters),
        "pareto": False,
    }


def _serving_rows(serving: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not serving:
        return []
    return [
        {
            "batch_size": int(batch["batch_size"]),
            "p50_ms": float(batch["p50_ms"]),
            "p99_ms": float(batch["p99_ms"]),
            "dollars_per_1000": float(batch["dollars_per_1k"]),
            "joules_per_1000": float(batch["joules_per_1k"]),
            "requests": int(batch["requests"]),
        }
        for batch in serving.get("batches", [])
    ]


def serving_cost(row: dict[str, Any], batch_size: int = PARETO_BATCH) -> float | None:
    """A row's serving dollars per 1 000 predictions at batch_size, if it was measured."""
    for figures in row.get("serving", []):
        if figures["batch_size"] == batch_size:
            return float(figures["dollars_per_1000"])
    return None


def mark_pareto(rows: list[dict[str, Any]], *, maximize: bool) -> None:
    """Marks the rows no other row beats on both metric and serving cost (a row without
    serving figures is on no front)."""
    sign = 1.0 if maximize else -1.0
    measured = [(row, serving_cost(row)) for row in rows]
    for row, cost in measured:
        row["pareto"] = cost is not None and not any(
            other is not row
            and other_cost is not None
            and sign * other["value"] >= sign * row["value"]
            and other_cost <= cost
            and (sign * other["value"] > sign * row["value"] or other_cost < cost)
            for other, other_cost in measured
        )


def ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows numbered in the order given (best first)."""
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows

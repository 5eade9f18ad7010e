"""A search's Prometheus series: trials by state, running trials, best value, budget and
spent (metrics defined in service/metrics.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.training.search_record import SearchRecord, TrialRecord

if TYPE_CHECKING:
    from service.metrics import Metrics


class SearchGauges:
    """Publishes a search's progress to the service's metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def started(self, record: SearchRecord) -> None:
        budget = record.budget
        limits = {
            "trials": float(budget.trials),
            "seconds": budget.seconds,
            "dollars": budget.dollars,
            "joules": budget.joules,
        }
        for resource, value in limits.items():
            self._metrics.search_budget.labels(record.id, record.dataset, resource).set(value)
        self.spent(record)

    def trial_ended(self, record: SearchRecord, trial: TrialRecord) -> None:
        self._metrics.search_trials.labels(record.id, record.dataset, trial.state).inc()
        self.running(record)
        self.spent(record)
        best = record.best()
        if best is not None and best.value is not None:
            self._metrics.search_best.labels(record.id, record.dataset, record.metric).set(
                best.value
            )

    def running(self, record: SearchRecord) -> None:
        self._metrics.search_running_trials.labels(record.id, record.dataset).set(
            len(record.running_trials)
        )

    def spent(self, record: SearchRecord) -> None:
        spent = {
            "trials": float(len(record.trials)),
            "seconds": record.seconds_spent,
            "dollars": record.dollars_spent,
            "joules": record.joules_spent,
        }
        for resource, value in spent.items():
            self._metrics.search_spent.labels(record.id, record.dataset, resource).set(value)

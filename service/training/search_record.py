"""What a search is and keeps: its request, its trials, what it spent and its leaderboard,
as plain data that round-trips through JSON (the study's user attribute)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

RUNNING, SUCCEEDED, FAILED, PRUNED, CANCELLED = (
    "running", "succeeded", "failed", "pruned", "cancelled",
)  # fmt: skip
TRIAL_STATES = (RUNNING, SUCCEEDED, FAILED, PRUNED, CANCELLED)
#: Higher is better for these; lower for every other metric a search may optimise.
MAXIMIZED = frozenset({"accuracy", "f1_macro", "r2"})
#: The metrics a search may optimise, by the dataset's task; the first is the default.
METRICS = {"classification": ("accuracy", "f1_macro"), "regression": ("r2", "rmse")}


@dataclass
class Budget:
    """Whichever runs out first ends the search; 0 means no limit of that kind."""

    trials: int = 0
    seconds: float = 0.0
    dollars: float = 0.0
    joules: float = 0.0


@dataclass
class TrialRecord:
    """One trial: what was sampled, the job that trained it and what came of it."""

    number: int
    algorithm: str
    paradigm: str
    hyperparameters: dict[str, Any]
    state: str = RUNNING
    job_id: str = ""
    value: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    model_name: str = ""
    model_version: str = ""
    error: str = ""
    device_seconds: float = 0.0
    joules: float = 0.0
    dollars: float = 0.0
    epochs_reported: int = 0


@dataclass
class SearchRecord:
    """A search as GetSearch shows it, live or read back from the database."""

    id: str
    dataset: str
    task: str
    algorithms: list[str]
    metric: str
    maximize: bool
    budget: Budget
    seed: int
    pruner: str
    prune_threshold: float
    parallelism: int
    test_fraction: float
    device: str
    study_name: str
    study_storage: str
    state: str = RUNNING
    stop_reason: str = ""
    trials: list[TrialRecord] = field(default_factory=list)
    seconds_spent: float = 0.0
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    finished_at: str = ""
    #: LeaderboardEntry fields as dicts (service/training/leaderboard.py); final once the
    #: search has ended and its winners were served.
    leaderboard: list[dict[str, Any]] = field(default_factory=list)
    leaderboard_final: bool = False
    #: Alias the best trial goes to when the search ends, its gates, and what came of it.
    promote_alias: str = ""
    promote_gates: dict[str, Any] = field(default_factory=dict)
    promotion: str = ""

    @property
    def ended(self) -> bool:
        return self.state != RUNNING

    @property
    def dollars_spent(self) -> float:
        return sum(trial.dollars for trial in self.trials)

    @property
    def joules_spent(self) -> float:
        return sum(trial.joules for trial in self.trials)

    @property
    def running_trials(self) -> list[TrialRecord]:
        return [trial for trial in self.trials if trial.state == RUNNING]

    def best(self, trials: list[TrialRecord] | None = None) -> TrialRecord | None:
        """The best succeeded trial (of `trials`, default all); ties go to the earliest."""
        scored = [
            t
            for t in (self.trials if trials is None else trials)
            if t.state == SUCCEEDED and t.value is not None and math.isfinite(t.value)
        ]
        if not scored:
            return None
        sign = -1.0 if self.maximize else 1.0
        return min(scored, key=lambda t: (sign * float(t.value or 0.0), t.number))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchRecord:
        values = dict(data)
        values["budget"] = Budget(**values["budget"])
        values["trials"] = [TrialRecord(**trial) for trial in values.get("trials", [])]
        return cls(**values)

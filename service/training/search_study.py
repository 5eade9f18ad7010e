"""A search's Optuna study: TPE sampling over algorithms and their hyperparameters, pruning
from per-epoch validation scores, and the search's own record, all in one database.

The study lives where the job journal does: SQLite in the data directory, or the shared
registry's PostgreSQL, so that every replica reads the same searches. Optuna is blocking
(SQLAlchemy), so a `Study` is only ever called from one thread (SearchManager's), which
imports this module when it first opens the database. Its imports are light (checked: no
scipy, pandas or torch come with it), but not free (SQLAlchemy: ~0.4 s).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import optuna
import sqlalchemy.exc
from optuna.pruners import BasePruner, MedianPruner, NopPruner, ThresholdPruner
from optuna.samplers import TPESampler
from optuna.trial import TrialState

from service.errors import InvalidArgument, Unavailable
from service.training.search_space import space
from service.training.search_storage import PRUNERS, STUDY_PREFIX, redacted

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: The study's user attribute holding the search's record (JSON).
RECORD_ATTR = "paradigm_search"
#: Tries at opening the study database (see _open_storage).
SCHEMA_ATTEMPTS = 5
#: Deep trials are not pruned before this epoch (one noisy epoch says little).
WARMUP_EPOCHS = 1


def make_pruner(name: str, threshold: float, maximize: bool) -> BasePruner:
    if name in ("", "median"):
        return MedianPruner(n_startup_trials=2, n_warmup_steps=WARMUP_EPOCHS)
    if name == "none":
        return NopPruner()
    if name == "threshold":
        if maximize:
            return ThresholdPruner(lower=threshold, n_warmup_steps=0)
        return ThresholdPruner(upper=threshold, n_warmup_steps=0)
    raise InvalidArgument(f"unknown pruner {name!r}; expected one of: {', '.join(PRUNERS)}")


@dataclass
class Sampled:
    """One asked trial: its Optuna trial, algorithm and hyperparameters."""

    trial: optuna.Trial
    algorithm: str
    hyperparameters: dict[str, Any]


class Study:
    """One search's Optuna study; blocking, call from one thread."""

    def __init__(
        self,
        storage: optuna.storages.BaseStorage,
        name: str,
        *,
        maximize: bool,
        seed: int,
        pruner: BasePruner,
        algorithms: list[str],
    ) -> None:
        self.name = name
        self._algorithms = algorithms
        self._study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction="maximize" if maximize else "minimize",
            sampler=TPESampler(seed=seed),
            pruner=pruner,
        )

    def ask(self) -> Sampled:
        trial = self._study.ask()
        algorithm = str(trial.suggest_categorical("algorithm", self._algorithms))
        # A conditional space: each algorithm's own dimensions, named after it.
        values: dict[str, Any] = {}
        for dimension in space(algorithm):
            name = f"{algorithm}.{dimension.name}"
            if dimension.kind == "choice":
                values[dimension.name] = trial.suggest_categorical(name, dimension.choices)
            elif dimension.kind == "int":
                low, high = int(dimension.low), int(dimension.high)
                values[dimension.name] = trial.suggest_int(name, low, high, log=dimension.log)
            else:
                values[dimension.name] = trial.suggest_float(
                    name, dimension.low, dimension.high, log=dimension.log
                )
        return Sampled(trial, algorithm, values)

    def report(self, trial: optuna.Trial, value: float, epoch: int) -> bool:
        """Reports a per-epoch score; whether the pruner stops the trial there."""
        trial.report(value, epoch)
        return bool(trial.should_prune())

    def tell(self, trial: optuna.Trial, state: str, value: float | None = None) -> None:
        """Ends a trial: "complete" with its value, "pruned", or "fail"."""
        if state == "complete":
            self._study.tell(trial, value)
        elif state == "pruned":
            self._study.tell(trial, state=TrialState.PRUNED)
        else:
            self._study.tell(trial, state=TrialState.FAIL)


class StudyDatabase:
    """The searches' database (Optuna's RDB storage); blocking, call from one thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.storage = _open_storage(url)

    def study(
        self,
        search_id: str,
        *,
        maximize: bool,
        seed: int,
        pruner: str,
        threshold: float,
        algorithms: list[str],
    ) -> Study:
        return Study(
            self.storage, STUDY_PREFIX + search_id, maximize=maximize, seed=seed,
            pruner=make_pruner(pruner, threshold, maximize), algorithms=algorithms,
        )  # fmt: skip

    def records(self) -> list[dict[str, Any]]:
        """Every search record in the database, oldest first."""
        records = []
        for frozen in self.storage.get_all_studies():
            text = frozen.user_attrs.get(RECORD_ATTR)
            if frozen.study_name.startswith(STUDY_PREFIX) and text:
                records.append(json.loads(text))
        return sorted(records, key=lambda record: str(record.get("created_at", "")))

    def record(self, search_id: str) -> dict[str, Any] | None:
        """One search's record, or None."""
        try:
            study_id = self.storage.get_study_id_from_name(STUDY_PREFIX + search_id)
        except KeyError:
            return None
        text = self.storage.get_study_user_attrs(study_id).get(RECORD_ATTR)
        return json.loads(text) if text else None

    def save(self, search_id: str, record: dict[str, Any]) -> None:
        """Rewrites a search's record (also one whose Study this process never opened)."""
        study_id = self.storage.get_study_id_from_name(STUDY_PREFIX + search_id)
        self.storage.set_study_user_attr(study_id, RECORD_ATTR, json.dumps(record))

    def close(self) -> None:
        self.storage.remove_session()
        self.storage.engine.dispose()


def _open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's storage, its tables made if missing. Replicas starting together on a new
    shared database race to make them (one of them meets "type studydirection already
    exists"): the loser tries again and finds them made."""
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if attempt == SCHEMA_ATTEMPTS - 1:
                raise
            log.info("study database not ready (%s); trying again", type(exc).__name__)
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def guarded(url: str, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Calls function; a database that cannot be used (down, unreachable, locked,
    read-only) is UNAVAILABLE to the caller, named without its password."""
    try:
        return function(*args, **kwargs)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        raise Unavailable(f"the search database {redacted(url)} cannot be used: {detail}") from exc

"""A StartSearch request checked completely before anything starts: the dataset, its
metric, the budget, the pruner, and the algorithms (each checked as StartTraining would
check its first trial); the search's record, or InvalidArgument / NotFound saying why not."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.errors import FailedPrecondition, InvalidArgument, ParadigmError
from service.training import catalog, search_storage
from service.training.search_record import MAXIMIZED, METRICS, Budget, SearchRecord
from service.training.validation import TrainingRequest

if TYPE_CHECKING:
    from service.datasets.store import DatasetStore
    from service.settings import Settings
    from service.training.jobs import JobManager


@dataclass(frozen=True)
class SearchRequest:
    """A StartSearch request's fields, as the caller sent them."""

    dataset: str
    algorithms: list[str] = field(default_factory=list)
    budget: Budget = field(default_factory=Budget)
    metric: str = ""
    seed: int = 0
    parallelism: int = 0
    pruner: str = ""
    prune_threshold: float = 0.0
    test_fraction: float = 0.0
    device: str = "auto"
    #: Alias the best trial is promoted to when the search ends ("" = none), and the gates
    #: (promotion.Gates' fields) it must pass.
    promote_alias: str = ""
    promote_gates: dict[str, Any] = field(default_factory=dict)


def new_record(
    request: SearchRequest,
    *,
    settings: Settings,
    datasets: DatasetStore,
    jobs: JobManager,
    storage_url: str,
) -> SearchRecord:
    """The record of the search a valid request asks for; raises before anything starts."""
    info = datasets.get(request.dataset)  # NotFound for an unknown dataset
    task = info.task
    if task not in METRICS:
        raise InvalidArgument(
            f"dataset {request.dataset!r} is a {task} dataset; searches optimise a held-out "
            f"metric of classification or regression"
        )
    metric = request.metric or METRICS[task][0]
    if metric not in METRICS[task]:
        raise InvalidArgument(
            f"metric {metric!r} cannot be optimised on a {task} dataset; expected one of: "
            f"{', '.join(METRICS[task])}"
        )
    _check_budget(request.budget)
    most = settings.max_queued_jobs
    if not 0 <= request.parallelism <= most:
        raise InvalidArgument(
            f"parallelism must be between 0 and the training queue's size ({most}), "
            f"not {request.parallelism}"
        )
    if request.pruner not in ("", *search_storage.PRUNERS):
        raise InvalidArgument(
            f"unknown pruner {request.pruner!r}; expected one of: "
            + ", ".join(search_storage.PRUNERS)
        )
    if not math.isfinite(request.prune_threshold):
        raise InvalidArgument("prune_threshold must be a finite number")
    search_id = uuid.uuid4().hex[:12]
    return SearchRecord(
        id=search_id,
        dataset=request.dataset,
        task=task,
        algorithms=_algorithms(request, task, jobs),
        metric=metric,
        maximize=metric in MAXIMIZED,
        budget=request.budget,
        seed=request.seed,
        pruner=request.pruner or "median",
        prune_threshold=request.prune_threshold,
        parallelism=request.parallelism or settings.max_concurrent_jobs,
        test_fraction=request.test_fraction,
        device=request.device or "auto",
        promote_alias=request.promote_alias,
        promote_gates=dict(request.promote_gates),
        study_name=search_storage.STUDY_PREFIX + search_id,
        study_storage=search_storage.redacted(storage_url),
    )


def trial_request(
    search: SearchRequest | SearchRecord,
    algorithm: str,
    hyperparameters: dict[str, Any],
    model_name: str = "",
) -> TrainingRequest:
    """The StartTraining request of one trial."""
    return TrainingRequest(
        dataset=search.dataset,
        algorithm=algorithm,
        hyperparameters=hyperparameters,
        model_name=model_name,
        # One split for every trial: their held-out metrics compare on the same rows.
        seed=search.seed,
        test_fraction=search.test_fraction,
        device=search.device or "auto",
    )


def _check_budget(budget: Budget) -> None:
    for name in ("trials", "seconds", "dollars", "joules"):
        value = getattr(budget, name)
        if not math.isfinite(value) or value < 0:
            raise InvalidArgument(f"budget.{name} must be a finite number >= 0, not {value}")
    if not (budget.trials or budget.seconds or budget.dollars or budget.joules):
        raise InvalidArgument(
            "a search needs a budget: trials, seconds, dollars or joules (more than 0)"
        )


def _algorithms(request: SearchRequest, task: str, jobs: JobManager) -> list[str]:
    """The algorithms asked for, each checked as StartTraining would check its job; by
    default every catalog algorithm that fits the dataset and can be trained here."""
    if request.algorithms:
        names = list(dict.fromkeys(request.algorithms))
        for name in names:
            algorithm = catalog.get_algorithm(name)
            if task not in algorithm.tasks:
                raise InvalidArgument(
                    f"{name} cannot do {task}, the task of dataset {request.dataset!r} "
                    f"(it does {', '.join(algorithm.tasks)}): its trials would not compare "
                    "with the others"
                )
            jobs.check_training(trial_request(request, name, {}))
        return names
    fitting = []
    for algorithm in catalog.ALGORITHMS.values():
        if task not in algorithm.tasks:
            continue
        try:
            jobs.check_training(trial_request(request, algorithm.name, {}))
        except ParadigmError:
            continue  # wrong kind of data, or this install cannot train that paradigm
        fitting.append(algorithm.name)
    if not fitting:
        raise FailedPrecondition(
            f"no algorithm of this server can train on dataset {request.dataset!r}"
        )
    return fitting

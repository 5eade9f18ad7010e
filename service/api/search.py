"""paradigm.v1.SearchService: searches and their leaderboards. Thin: each RPC converts its
message, calls the SearchManager, and converts back."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc.aio

from service.api import convert
from service.api.codec import check_strings
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from service.gen.paradigm.v1 import search_pb2 as search_pb
from service.gen.paradigm.v1 import search_pb2_grpc as search_grpc
from service.registry.aliases import validate_alias
from service.training.search import SearchManager
from service.training.search_record import Budget, SearchRecord, TrialRecord
from service.training.search_request import SearchRequest

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

SEARCH_STATES = {
    "running": search_pb.SEARCH_STATE_RUNNING,
    "succeeded": search_pb.SEARCH_STATE_SUCCEEDED,
    "failed": search_pb.SEARCH_STATE_FAILED,
    "cancelled": search_pb.SEARCH_STATE_CANCELLED,
}
TRIAL_STATES = {
    "running": search_pb.TRIAL_STATE_RUNNING,
    "succeeded": search_pb.TRIAL_STATE_SUCCEEDED,
    "failed": search_pb.TRIAL_STATE_FAILED,
    "pruned": search_pb.TRIAL_STATE_PRUNED,
    "cancelled": search_pb.TRIAL_STATE_CANCELLED,
}


class SearchServicer(search_grpc.SearchServiceServicer):
    def __init__(self, searches: SearchManager) -> None:
        self._searches = searches

    async def StartSearch(
        self, request: search_pb.StartSearchRequest, context: Context
    ) -> search_pb.Search:
        check_strings(request)
        budget = request.budget
        gates = convert.gates_from_proto(request.promote_gates)
        gates.check()
        record = await self._searches.start_search(
            SearchRequest(
                dataset=request.dataset,
                algorithms=list(request.algorithms),
                budget=Budget(
                    trials=budget.trials,
                    seconds=budget.seconds,
                    dollars=budget.dollars,
                    joules=budget.joules,
                ),
                metric=request.metric,
                seed=request.seed,
                parallelism=request.parallelism,
                pruner=request.pruner,
                prune_threshold=request.prune_threshold,
                test_fraction=request.test_fraction,
                device=convert.device_name(request.device),
                promote_alias=validate_alias(request.promote_alias)
                if request.promote_alias
                else "",
                promote_gates=dataclasses.asdict(gates),
            )
        )
        return search_to_proto(record)

    async def GetSearch(
        self, request: search_pb.GetSearchRequest, context: Context
    ) -> search_pb.Search:
        check_strings(request)
        return search_to_proto(await self._searches.get(request.id))

    async def WatchSearch(
        self, request: search_pb.WatchSearchRequest, context: Context
    ) -> AsyncIterator[search_pb.Search]:
        check_strings(request)
        async for record in self._searches.watch(request.id):
            yield search_to_proto(record)

    async def CancelSearch(
        self, request: search_pb.CancelSearchRequest, context: Context
    ) -> search_pb.Search:
        check_strings(request)
        return search_to_proto(await self._searches.cancel(request.id))

    async def GetLeaderboard(
        self, request: search_pb.GetLeaderboardRequest, context: Context
    ) -> search_pb.Leaderboard:
        check_strings(request)
        record, rows = await self._searches.leaderboard(request.id)
        return search_pb.Leaderboard(
            search_id=record.id,
            dataset=record.dataset,
            metric=record.metric,
            maximize=record.maximize,
            entries=[_entry_to_proto(row) for row in rows],
            final=record.leaderboard_final,
        )


def search_to_proto(record: SearchRecord) -> search_pb.Search:
    best = record.best()
    message = search_pb.Search(
        id=record.id,
        state=SEARCH_STATES[record.state],
        dataset=record.dataset,
        algorithms=record.algorithms,
        metric=record.metric,
        maximize=record.maximize,
        budget=search_pb.SearchBudget(
            trials=record.budget.trials,
            seconds=record.budget.seconds,
            dollars=record.budget.dollars,
            joules=record.budget.joules,
        ),
        seed=record.seed,
        trials_started=len(record.trials),
        seconds_spent=record.seconds_spent,
        dollars_spent=record.dollars_spent,
        joules_spent=record.joules_spent,
        stop_reason=record.stop_reason,
        best_trial=best.number if best is not None else -1,
        trials=[_trial_to_proto(trial) for trial in record.trials],
        created_at=convert.timestamp(record.created_at),
        finished_at=convert.timestamp(record.finished_at),
        study_storage=record.study_storage,
        study_name=record.study_name,
        pruner=record.pruner,
        promotion=record.promotion,
    )
    if best is not None and best.value is not None:
        message.best_value = best.value
    return message


def _trial_to_proto(trial: TrialRecord) -> search_pb.Trial:
    message = search_pb.Trial(
        number=trial.number,
        state=TRIAL_STATES[trial.state],
        algorithm=trial.algorithm,
        paradigm=convert.PARADIGMS.get(trial.paradigm, pb.PARADIGM_UNSPECIFIED),
        job_id=trial.job_id,
        hyperparameters={k: convert.param_to_proto(v) for k, v in trial.hyperparameters.items()},
        metrics=_finite(trial.metrics),
        model_name=trial.model_name,
        model_version=trial.model_version,
        error=trial.error,
        training_dollars=trial.dollars,
        training_joules=trial.joules,
        epochs_reported=trial.epochs_reported,
    )
    if trial.value is not None:
        message.value = trial.value
    return message


def _entry_to_proto(row: dict[str, Any]) -> search_pb.LeaderboardEntry:
    return search_pb.LeaderboardEntry(
        rank=row["rank"],
        algorithm=row["algorithm"],
        paradigm=convert.PARADIGMS.get(row["paradigm"], pb.PARADIGM_UNSPECIFIED),
        trial=row["trial"],
        model_name=row["model_name"],
        model_version=row["model_version"],
        value=row["value"],
        ci_low=row["ci_low"],
        ci_high=row["ci_high"],
        fit_seconds=row["fit_seconds"],
        training_device_seconds=row["training_device_seconds"],
        training_joules=row["training_joules"],
        training_dollars=row["training_dollars"],
        model_bytes=row["model_bytes"],
        serving=[search_pb.ServingFigures(**figures) for figures in row["serving"]],
        serving_error=row["serving_error"],
        pareto=row["pareto"],
        hyperparameters={k: convert.param_to_proto(v) for k, v in row["hyperparameters"].items()},
    )


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {name: value for name, value in metrics.items() if math.isfinite(value)}

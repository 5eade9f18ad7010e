"""Searches: Optuna samples algorithms and hyperparameters, each trial is an ordinary
training job (same queue, limits, progress and cancel), and a budget in trials, seconds,
dollars or joules ends the search, whichever runs out first.

The orchestration runs here, on the serving side, as an asyncio task per search. Optuna's
calls are blocking database work, so they run on one thread of their own, in order. The
search's record is saved in its study (search_study.py) after every change, so GetSearch
answers after the search ended and after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from service.errors import FailedPrecondition, NotFound, ParadigmError, Unavailable
from service.training import catalog, leaderboard, search_request, search_storage
from service.training.job import CANCELLED as JOB_CANCELLED
from service.training.job import SUCCEEDED as JOB_SUCCEEDED
from service.training.job import Job
from service.training.search_metrics import SearchGauges
from service.training.search_record import (
    CANCELLED,
    FAILED,
    PRUNED,
    SUCCEEDED,
    SearchRecord,
    TrialRecord,
)
from service.training.search_request import SearchRequest

if TYPE_CHECKING:
    from service.datasets.store import DatasetStore
    from service.metrics import Metrics
    from service.registry.store import ModelRegistry
    from service.settings import Settings
    from service.training.jobs import JobManager
    from service.training.search_study import Sampled, Study, StudyDatabase

log = logging.getLogger(__name__)
_T = TypeVar("_T")

INTERRUPTED = "interrupted: the server stopped while the search ran"
#: Trials in a row that could not even be queued before a search gives up.
MAX_LAUNCH_FAILURES = 5
#: Longest GetLeaderboard waits for an ended search's winners to be served.
LEADERBOARD_WAIT_SECONDS = 120.0


class Promote(Protocol):
    """Points `alias` at a version if it passes `gates` (promotion.Gates' fields); returns
    what happened, in words ("refused: ..." when a gate failed)."""

    async def __call__(
        self, name: str, version: str, alias: str, gates: dict[str, Any], source: str
    ) -> str: ...


class ServingMeasurer(Protocol):
    """Serves a published model version and returns its figures (ServingProbe.to_dict())."""

    def __call__(self, name: str, version: str) -> Awaitable[dict[str, Any]]: ...


@dataclass
class _Live:
    """A search this server runs: its record, its study and who is waiting on it."""

    record: SearchRecord
    study: Study
    started: float = field(default_factory=time.monotonic)
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    leaderboard_done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    #: Bumped at every change; watchers wait for it to move.
    version: int = 0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def wake(self) -> None:
        self.version += 1
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def changed(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        await waiter


class SearchManager:
    """Starts, runs, cancels and remembers searches."""

    def __init__(
        self,
        settings: Settings,
        jobs: JobManager,
        datasets: DatasetStore,
        registry: ModelRegistry,
        metrics: Metrics,
        measure_serving: ServingMeasurer | None = None,
        promote: Promote | None = None,
    ) -> None:
        self._settings = settings
        self._promote = promote
        self._jobs = jobs
        self._datasets = datasets
        self._registry = registry
        self._gauges = SearchGauges(metrics)
        self._measure_serving = measure_serving
        self._url = search_storage.storage_url(settings.registry_url, registry.root)
        self._shared = registry.shared
        # One thread: Optuna's storage is called in order, never concurrently.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search-study")
        self._opening: asyncio.Task[StudyDatabase] | None = None
        self._live: dict[str, _Live] = {}
        self._ended: dict[str, SearchRecord] = {}

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Opens the study database in the background (Optuna and SQLAlchemy are imported
        then, not before serving starts)."""
        self._opening = asyncio.create_task(self._open(), name="search-database")

    async def _open(self) -> StudyDatabase:
        """Opens the database; ends the searches a stopped server left running."""
        db: StudyDatabase = await self._call(_open_database, self._url)
        # In a shared database another replica may be running its own searches: only a
        # server with a database of its own knows that a running search is orphaned.
        records = [] if self._shared else await self._call(db.records)
        for data in records:
            record = SearchRecord.from_dict(data)
            if not record.ended:
                self._interrupt(record)
                await self._call(db.save, record.id, record.to_dict())
            self._ended.setdefault(record.id, record)
        return db

    async def _database(self) -> StudyDatabase:
        """The open database; UNAVAILABLE while it cannot be opened."""
        assert self._opening is not None, "start() first"
        try:
            return await asyncio.shield(self._opening)
        except ParadigmError:
            raise
        except Exception as exc:
            raise Unavailable(f"the search database cannot be opened: {exc}") from exc

    async def stop(self) -> None:
        """Ends every running search as interrupted (before the job manager stops its jobs),
        saves them and closes the database."""
        for live in list(self._live.values()):
            if live.task is not None:
                live.task.cancel()
        for live in list(self._live.values()):
            if live.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await live.task
        if self._opening is not None:
            if not self._opening.done():
                self._opening.cancel()
            with contextlib.suppress(BaseException):
                db = await self._opening
                await self._call(db.close)
        self._thread.shutdown(wait=False)

    # -- requests -------------------------------------------------------------------------

    async def start_search(self, request: SearchRequest) -> SearchRecord:
        """Validates the request completely, then starts the search; raises before."""
        record = search_request.new_record(
            request,
            settings=self._settings,
            datasets=self._datasets,
            jobs=self._jobs,
            storage_url=self._url,
        )
        db = await self._database()
        study = await self._call(
            db.study,
            record.id,
            maximize=record.maximize,
            seed=record.seed,
            pruner=record.pruner,
            threshold=_pruning_threshold(record),
            algorithms=record.algorithms,
        )
        await self._call(db.save, record.id, record.to_dict())
        live = self._live[record.id] = _Live(record, study)
        self._gauges.started(record)
        live.task = asyncio.create_task(self._run(live), name=f"search-{record.id}")
        log.info(
            "search %s started on %s: %s, budget %s",
            record.id, record.dataset, record.algorithms, record.budget,
        )  # fmt: skip
        return record

    async def get(self, search_id: str) -> SearchRecord:
        live = self._live.get(search_id)
        if live is not None:
            return live.record
        record = self._ended.get(search_id)
        if record is not None:
            return record
        # Another replica's search, or one ended before this server started.
        if not _valid_id(search_id):
            raise NotFound(f"search {search_id!r} not found")
        data = await self._call((await self._database()).record, search_id)
        if data is None:
            raise NotFound(f"search {search_id!r} not found")
        return SearchRecord.from_dict(data)

    async def watch(self, search_id: str) -> AsyncIterator[SearchRecord]:
        """The search now, then after every change, until it has ended."""
        live = self._live.get(search_id)
        if live is None:
            yield await self.get(search_id)
            return
        while True:
            seen = live.version
            yield live.record
            if live.record.ended:
                return
            if live.version == seen:
                await live.changed()

    async def cancel(self, search_id: str) -> SearchRecord:
        """Stops the search and cancels its running trials; returns once they ended."""
        live = self._live.get(search_id)
        record = live.record if live is not None else await self.get(search_id)
        if live is None or record.ended:
            raise FailedPrecondition(f"search {search_id!r} already ended: {record.state}")
        live.stop_requested.set()
        if live.task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.shield(_ended(live)), self._settings.cancel_grace_seconds + 10.0
                )
        return live.record

    async def leaderboard(self, search_id: str) -> tuple[SearchRecord, list[dict[str, Any]]]:
        """The search and its leaderboard: the final one (winners served) once it ended,
        waiting for that serving if it is under way; the trials' figures while it runs."""
        live = self._live.get(search_id)
        if live is not None:
            if live.record.ended:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.shield(live.leaderboard_done.wait()), LEADERBOARD_WAIT_SECONDS
                    )
            if not live.record.leaderboard_final:
                return live.record, self._rows(live.record, serving={})
            return live.record, live.record.leaderboard
        record = await self.get(search_id)
        if record.leaderboard_final:
            return record, record.leaderboard
        return record, self._rows(record, serving={})

    # -- the search loop ------------------------------------------------------------------

    async def _run(self, live: _Live) -> None:
        record = live.record
        running: dict[int, asyncio.Task[None]] = {}
        stop = asyncio.ensure_future(live.stop_requested.wait())
        failures = 0
        reason = ""
        try:
            while True:
                reason = self._exhausted(live)
                if reason:
                    break
                trials_left = not record.budget.trials or len(record.trials) < record.budget.trials
                if trials_left and len(running) < record.parallelism:
                    follow = await self._launch(live)
                    if follow is None:
                        failures += 1
                        if failures >= MAX_LAUNCH_FAILURES:
                            reason = f"{failures} trials in a row could not be started"
                            break
                    else:
                        failures = 0
                        running[follow[0]] = follow[1]
                    continue
                if not running:
                    reason = "trial budget spent"
                    break
                await asyncio.wait(
                    [*running.values(), stop],
                    timeout=self._seconds_left(live),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for number, task in list(running.items()):
                    if task.done():
                        del running[number]
            await self._cancel_trials(record, running)
            self._end(live, reason)
        except asyncio.CancelledError:
            # The server is stopping: the job manager stops the trials' jobs next.
            for task in running.values():
                task.cancel()
            self._interrupt(record)
            await self._save(live)
            live.leaderboard_done.set()
            live.wake()
            self._live.pop(record.id, None)
            self._ended[record.id] = record
            raise
        except Exception as exc:  # a bug here must still end the search
            log.exception("search %s failed", record.id)
            await self._cancel_trials(record, running)
            self._end(live, f"internal error: {exc}", state=FAILED)
        finally:
            stop.cancel()
        await self._save(live)
        live.wake()
        await self._final_leaderboard(live)
        self._live.pop(record.id, None)
        self._ended[record.id] = record

    async def _promote_winner(self, live: _Live) -> None:
        """Promotes the best trial to the requested alias, gates and all; what came of it
        is kept on the record (a refusal does not fail the search)."""
        record = live.record
        if not record.promote_alias:
            return
        best = record.best()
        if best is None or self._promote is None:
            record.promotion = "not promoted: no trial succeeded"
        else:
            try:
                record.promotion = await self._promote(
                    best.model_name, best.model_version, record.promote_alias,
                    record.promote_gates, f"search {record.id}",
                )  # fmt: skip
            except Exception as exc:  # the search's result must not be lost with it
                log.exception("search %s: promotion failed", record.id)
                record.promotion = f"not promoted: {exc}"
        log.info("search %s: %s", record.id, record.promotion)
        await self._save(live)

    def _exhausted(self, live: _Live) -> str:
        """Why the search must stop now, or ""."""
        record, budget = live.record, live.record.budget
        record.seconds_spent = time.monotonic() - live.started
        if live.stop_requested.is_set():
            return "cancelled"
        if budget.seconds and record.seconds_spent >= budget.seconds:
            return "time budget spent"
        if budget.dollars and record.dollars_spent >= budget.dollars:
            return "dollar budget spent"
        if budget.joules and record.joules_spent >= budget.joules:
            return "energy budget spent"
        return ""

    def _seconds_left(self, live: _Live) -> float | None:
        if not live.record.budget.seconds:
            return None
        return max(0.0, live.record.budget.seconds - (time.monotonic() - live.started))

    def _end(self, live: _Live, reason: str, state: str = "") -> None:
        record = live.record
        record.seconds_spent = time.monotonic() - live.started
        record.stop_reason = reason
        if not state:
            if reason == "cancelled":
                state = CANCELLED
            elif record.best() is not None:
                state = SUCCEEDED
            else:
                state = FAILED
                record.stop_reason = f"{reason}; no trial succeeded"
        record.state = state
        record.finished_at = datetime.now(UTC).isoformat()
        self._gauges.spent(record)
        log.info("search %s %s: %s", record.id, state, record.stop_reason)

    def _interrupt(self, record: SearchRecord) -> None:
        record.state, record.stop_reason = FAILED, INTERRUPTED
        record.finished_at = record.finished_at or datetime.now(UTC).isoformat()
        for trial in record.running_trials:
            trial.state, trial.error = FAILED, INTERRUPTED

    async def _cancel_trials(self, record: SearchRecord, running: dict[int, asyncio.Task[None]]):
        """Cancels the running trials' jobs and waits for their trials to be concluded."""
        if not running:
            return
        for trial in record.running_trials:
            if trial.job_id:
                with contextlib.suppress(FailedPrecondition, NotFound):
                    await self._jobs.cancel(trial.job_id)
        await asyncio.gather(*running.values(), return_exceptions=True)

    # -- one trial ------------------------------------------------------------------------

    async def _launch(self, live: _Live) -> tuple[int, asyncio.Task[None]] | None:
        """Asks the study for a trial and queues its job; None if it could not be queued."""
        record = live.record
        sampled: Sampled = await self._call(live.study.ask)
        number = sampled.trial.number
        algorithm = catalog.ALGORITHMS[sampled.algorithm]
        trial = TrialRecord(
            number, algorithm.name, algorithm.paradigm, dict(sampled.hyperparameters)
        )
        record.trials.append(trial)
        model_name = f"search-{record.id}-{algorithm.name}"
        request = search_request.trial_request(
            record, algorithm.name, trial.hyperparameters, model_name
        )
        try:
            job = await self._jobs.start_training(request)
        except ParadigmError as exc:
            trial.state, trial.error = FAILED, exc.message
            await self._call(live.study.tell, sampled.trial, "fail")
            self._trial_ended(live, trial)
            await self._save(live)
            return None
        trial.job_id = job.id
        self._gauges.running(record)
        await self._save(live)
        live.wake()
        task = asyncio.create_task(self._follow(live, trial, sampled, job))
        return number, task

    async def _follow(self, live: _Live, trial: TrialRecord, sampled: Sampled, job: Job) -> None:
        """Follows a trial to its end; a failure here ends the trial, not the search."""
        try:
            await self._follow_job(live, trial, sampled, job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("search %s: trial %d failed", live.record.id, trial.number)
            trial.state, trial.error = FAILED, f"internal error: {exc}"
            with contextlib.suppress(FailedPrecondition, NotFound):
                await self._jobs.cancel(job.id)
            self._trial_ended(live, trial)
            await self._save(live)
            live.wake()

    async def _follow_job(
        self, live: _Live, trial: TrialRecord, sampled: Sampled, job: Job
    ) -> None:
        """Reports a deep trial's epochs to the pruner (cancelling the job if it prunes),
        then concludes the trial from how its job ended."""
        record = live.record
        pruned_at = ""
        if trial.paradigm == "deep" and record.pruner != "none":
            async for event in self._jobs.watch(job.id):
                score = _epoch_score(event.metrics, record) if event.stage == "epoch" else None
                if score is None:
                    continue
                trial.epochs_reported = event.epoch
                if await self._call(live.study.report, sampled.trial, score[1], event.epoch):
                    pruned_at = f"pruned at epoch {event.epoch}: {score[0]} {score[2]:.4g}"
                    with contextlib.suppress(FailedPrecondition, NotFound):
                        await self._jobs.cancel(job.id)
                    break
                live.wake()
        await job.ended()
        self._conclude(record, trial, job, pruned_at)
        if trial.state == SUCCEEDED:
            await self._call(live.study.tell, sampled.trial, "complete", trial.value)
        else:
            state = "pruned" if trial.state == PRUNED else "fail"
            await self._call(live.study.tell, sampled.trial, state)
        self._trial_ended(live, trial)
        await self._save(live)
        live.wake()

    @staticmethod
    def _conclude(record: SearchRecord, trial: TrialRecord, job: Job, pruned_at: str) -> None:
        trial.metrics = {k: float(v) for k, v in job.metrics.items()}
        trial.model_name, trial.model_version = job.model_name, job.model_version
        trial.device_seconds = float(job.cost.get("device_seconds", 0.0))
        trial.joules = float(job.cost.get("joules", 0.0))
        trial.dollars = float(job.cost.get("dollars", 0.0))
        if job.state == JOB_SUCCEEDED:
            value = job.metrics.get(record.metric)
            if value is None or not math.isfinite(value):
                trial.state = FAILED
                trial.error = f"the job reported no {record.metric}"
            else:
                trial.state, trial.value = SUCCEEDED, float(value)
        elif job.state == JOB_CANCELLED:
            trial.state = PRUNED if pruned_at else CANCELLED
            trial.error = pruned_at or "cancelled with the search"
        else:
            trial.state, trial.error = FAILED, job.error

    # -- leaderboard ----------------------------------------------------------------------

    def _rows(
        self, record: SearchRecord, serving: dict[str, tuple[dict[str, Any] | None, str]]
    ) -> list[dict[str, Any]]:
        """Leaderboard rows of the record's winners; serving by trial number ("" key: not
        measured)."""
        rows = []
        for trial in leaderboard.winners(record):
            figures, error = serving.get(str(trial.number), (None, "not measured yet"))
            rows.append(
                leaderboard.entry(
                    record,
                    trial,
                    model_bytes=self._model_bytes(trial),
                    serving=figures,
                    serving_error=error,
                )
            )
        leaderboard.mark_pareto(rows, maximize=record.maximize)
        return leaderboard.ranked(rows)

    def _model_bytes(self, trial: TrialRecord) -> int:
        try:
            return self._registry.get(trial.model_name, trial.model_version).onnx_bytes
        except ParadigmError:
            return 0  # deleted since

    async def _final_leaderboard(self, live: _Live) -> None:
        """Serves each algorithm's winner through the data plane and saves the leaderboard."""
        record = live.record
        serving: dict[str, tuple[dict[str, Any] | None, str]] = {}
        try:
            for trial in leaderboard.winners(record):
                serving[str(trial.number)] = await self._serve(trial)
            record.leaderboard = self._rows(record, serving)
            record.leaderboard_final = True
            await self._save(live)
            # Before the leaderboard counts as final: who waits for it sees the promotion.
            await self._promote_winner(live)
        finally:
            live.leaderboard_done.set()
            live.wake()

    async def _serve(self, trial: TrialRecord) -> tuple[dict[str, Any] | None, str]:
        if self._measure_serving is None:
            return None, "this server has no serving probe"
        try:
            return await self._measure_serving(trial.model_name, trial.model_version), ""
        except ParadigmError as exc:
            return None, exc.message
        except Exception as exc:  # one model that cannot be served must not lose the rest
            log.exception("search: serving %s %s failed", trial.model_name, trial.model_version)
            return None, f"serving failed: {exc}"

    # -- metrics, storage -----------------------------------------------------------------

    def _trial_ended(self, live: _Live, trial: TrialRecord) -> None:
        self._gauges.trial_ended(live.record, trial)

    async def _save(self, live: _Live) -> None:
        """Writes the record to the database; a failed write is logged and the search goes
        on (its trials are real jobs, kept in the job journal either way)."""
        live.record.seconds_spent = (
            live.record.seconds_spent if live.record.ended else time.monotonic() - live.started
        )
        try:
            db = await self._database()
            await self._call(db.save, live.record.id, live.record.to_dict())
        except Exception as exc:
            log.warning("search %s: cannot save its record: %s", live.record.id, exc)

    async def _call(self, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Runs a blocking study call on the study thread (search_study.guarded: a database
        that cannot be used is UNAVAILABLE)."""
        loop = asyncio.get_running_loop()
        call = functools.partial(_guarded, self._url, function, *args, **kwargs)
        return await loop.run_in_executor(self._thread, call)


def _open_database(url: str) -> StudyDatabase:
    from service.training import search_study  # Optuna: on the study thread, when needed

    return search_study.StudyDatabase(url)


def _guarded(url: str, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    from service.training import search_study

    return search_study.guarded(url, function, *args, **kwargs)


async def _ended(live: _Live) -> None:
    while not live.record.ended:
        await live.changed()


def _epoch_score(
    metrics: dict[str, float], record: SearchRecord
) -> tuple[str, float, float] | None:
    """(name, value reported to the study, value as measured) of an epoch's validation
    score, oriented like the study: val_accuracy for classification, val_rmse for
    regression (negated when the study maximizes r2)."""
    name = "val_accuracy" if record.task == "classification" else "val_rmse"
    value = metrics.get(name)
    if value is None or not math.isfinite(value):
        return None
    reported = -value if record.task == "regression" and record.maximize else value
    return name, reported, value


def _pruning_threshold(record: SearchRecord) -> float:
    """The threshold in the study's orientation (see _epoch_score)."""
    if record.task == "regression" and record.maximize:
        return -record.prune_threshold
    return record.prune_threshold


def _valid_id(search_id: str) -> bool:
    return 0 < len(search_id) <= 64 and search_id.isalnum()

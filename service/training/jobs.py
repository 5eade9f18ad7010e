"""Training and import jobs: a bounded queue, the job journal, and the jobs' watchers.

Each job runs in its own spawned worker process (runner.py), so a crash, a leak, a cancel
or a job over max_job_seconds costs only that process. The manager keeps every event so a
watcher can join late, and writes every job and event to the job journal (journal.py), off
the event loop, so jobs outlive the server; a job that a stopped server left queued or
running is failed as interrupted at the next start, unless its model was published.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from service import tracing
from service.errors import (
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Unavailable,
    storage_error,
)
from service.tracking.runs import JobRuns
from service.training import catalog, validation
from service.training.job import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    Job,
    import_job,
    training_job,
)
from service.training.job_trace import JobTrace
from service.training.journal import JOURNAL_FILE, JobEvent, JobJournal, JournalWriter
from service.training.runner import JobRunner, Outcome

if TYPE_CHECKING:
    from service.cost.ledger import CostLedger
    from service.datasets.store import DatasetStore
    from service.metrics import Metrics
    from service.registry.manifest import Manifest
    from service.registry.store import ModelRegistry
    from service.settings import Settings
    from service.training.spec import TrainingSpec
    from service.training.validation import ImportRequest, TrainingRequest

log = logging.getLogger(__name__)

MAX_FINISHED_JOBS = 1000
INTERRUPTED = "interrupted: the server stopped before the job finished"
#: The error of a job whose caller went away while it was being written down.
ABANDONED = "the request was cancelled before the job was queued"

__all__ = ["INTERRUPTED", "Job", "JobEvent", "JobManager"]


class JobManager:
    """Owns the job queue, the job journal and the jobs' watchers."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        datasets: DatasetStore,
        metrics: Metrics,
        ledger: CostLedger,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._datasets = datasets
        self._metrics = metrics
        self._tracking = None
        if settings.mlflow_tracking_uri:
            self._tracking = JobRuns(settings, metrics, registry.model_path)
        self._runner = JobRunner(settings, registry, metrics, ledger, self._tracking)
        # Every (algorithm, final state) series exists from the start at 0, so increase()
        # sees a job's first failure and dashboards show zeros rather than no data.
        for algorithm in catalog.ALGORITHMS.values():
            for state in TERMINAL:
                metrics.training_jobs.labels(algorithm.paradigm, algorithm.name, state)
        self._jobs: dict[str, Job] = {}
        # Unbounded: the limit counts jobs still waiting (self._waiting), since a job
        # cancelled while queued stays in the queue until a runner pops and skips it, and
        # must not hold a place meanwhile.
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._waiting: set[str] = set()
        #: Jobs being written down before they join the queue: they hold a place in it.
        self._admitting = 0
        self._runners: list[asyncio.Task[None]] = []
        self._journal = JournalWriter(JobJournal(registry.root / JOURNAL_FILE))
        self._restore()

    async def start(self) -> None:
        self._runners = [
            asyncio.create_task(self._run_forever(), name=f"job-runner-{i}")
            for i in range(self._settings.max_concurrent_jobs)
        ]

    async def stop(self) -> None:
        """Stops every worker; unfinished jobs end FAILED (running) or CANCELLED (queued);
        every journal write is finished before it returns."""
        running = []
        for job in list(self._jobs.values()):
            if job.state == QUEUED:
                self._finish(job, CANCELLED, error="server shut down before the job started")
            elif job.state == RUNNING:
                job.abort_reason = "server shut down while the job ran"
                job.stop_worker()
                running.append(job)
        if running:
            waits = [asyncio.ensure_future(job.ended()) for job in running]
            await asyncio.wait(waits, timeout=self._settings.cancel_grace_seconds + 5.0)
            for wait in waits:
                wait.cancel()
        for runner in self._runners:
            runner.cancel()  # a runner cancelled in a worker's run kills the worker
        for runner in self._runners:
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        for job in running:
            if job.state not in TERMINAL:
                if job.worker is not None:
                    job.worker.kill()
                self._finish(job, FAILED, error=job.abort_reason)
        if self._tracking is not None:
            await self._tracking.close()
        await self._journal.close()

    # -- requests -----------------------------------------------------------------------

    async def start_training(self, request: TrainingRequest) -> Job:
        """Validates the request completely, then queues it; raises before queuing."""
        spec = self.check_training(request)
        paradigm = catalog.ALGORITHMS[spec.algorithm].paradigm
        job = training_job(spec, dataset=request.dataset, paradigm=paradigm)
        return await self._enqueue(job)

    def check_training(self, request: TrainingRequest) -> TrainingSpec:
        """The job a training request asks for, or the error StartTraining would raise."""
        algorithm = validation.trainable_algorithm(request.algorithm)
        info = self._datasets.get(request.dataset)
        return validation.training_spec(
            request,
            job_id=_new_id(),
            algorithm=algorithm,
            info=info,
            dataset_dir=self._datasets.path(request.dataset),
            settings=self._settings,
        )

    async def start_import(self, request: ImportRequest) -> Job:
        spec = validation.import_spec(request, job_id=_new_id(), settings=self._settings)
        return await self._enqueue(import_job(spec))

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id!r} not found")
        return job

    def list(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda job: job.created_at, reverse=True)

    async def watch(self, job_id: str) -> AsyncIterator[JobEvent]:
        """Every event so far, then live ones, until the job ends."""
        job = self.get(job_id)
        if not job.events_loaded:
            events = await self._journal.events(job.id)
            if not job.events_loaded:  # another watcher may have loaded them meanwhile
                job.events, job.settled, job.events_loaded = events, len(events), True
        async for event in job.history():
            yield event

    async def cancel(self, job_id: str) -> Job:
        """Cancels a job; a running worker is terminated, then killed after a grace."""
        job = self.get(job_id)
        if job.state in TERMINAL:
            raise FailedPrecondition(f"job {job_id!r} already ended: {job.state}")
        job.cancel_requested = True
        if job.state == QUEUED:
            self._waiting.discard(job.id)
            self._metrics.training_queue_depth.set(len(self._waiting))
            self._finish(job, CANCELLED)
        else:
            job.stop_worker()
        deadline = self._settings.cancel_grace_seconds + 5.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.ended(), deadline)
        return job

    # -- the queue ------------------------------------------------------------------------

    async def _enqueue(self, job: Job) -> Job:
        if len(self._waiting) + self._admitting >= self._settings.max_queued_jobs:
            raise ResourceExhausted(
                f"the training queue is full ({self._settings.max_queued_jobs} jobs waiting); "
                "try again later"
            )
        # Journal first: a job that could not be written down would vanish in a restart,
        # so it is refused instead (a full or read-only disk would fail its publish anyway).
        self._admitting += 1
        # In the queuing call's context: the job's span is its child, sampled with it.
        if tracing.ENABLED and tracing.recording():
            job.trace = JobTrace(
                job.id,
                job.kind,
                {"paradigm.model": job.model_name, "paradigm.algorithm": job.algorithm,
                 "paradigm.dataset": job.dataset},
            )  # fmt: skip
        try:
            queued = f"{job.kind} job queued"
            await self._written(job, self._record(job, stage=QUEUED, message=queued, required=True))
        except BaseException:
            if job.trace is not None:
                job.trace.end(FAILED, "not queued: the job journal could not be written")
            raise
        finally:
            self._admitting -= 1
        self._jobs[job.id] = job
        self._waiting.add(job.id)
        self._queue.put_nowait(job)
        self._prune()
        self._metrics.training_queue_depth.set(len(self._waiting))
        return job

    async def _run_forever(self) -> None:
        while True:
            job = await self._queue.get()
            self._waiting.discard(job.id)
            self._metrics.training_queue_depth.set(len(self._waiting))
            if job.state != QUEUED:
                continue
            try:
                outcome = await self._runner.run(job, self._record)
                job.cost = _total_cost(outcome)
                if outcome.manifest is not None:
                    self._succeed(job, outcome.manifest)
                else:
                    self._finish(job, outcome.state, error=outcome.error)
                self._runner.account(job, outcome)
            except Exception as exc:  # a bug here must not stop the runner
                log.exception("job %s: runner failed", job.id)
                if job.state not in TERMINAL:
                    self._finish(job, FAILED, error=f"internal error: {exc}")
                    self._runner.account(job, Outcome(FAILED))  # ends its MLflow run

    def _prune(self) -> None:
        finished = [job for job in self._jobs.values() if job.state in TERMINAL]
        pruned = [
            job.id for job in sorted(finished, key=lambda j: j.created_at)[:-MAX_FINISHED_JOBS]
        ]
        for job_id in pruned:
            del self._jobs[job_id]
        if pruned:
            self._journal.delete(pruned).add_done_callback(_log_failed_prune(len(pruned)))

    def _restore(self) -> None:
        """Reads the journal back; ends the jobs that the last server left unfinished."""
        jobs = self._journal.load(lambda **fields: Job(**fields, events_loaded=False))
        unfinished = [job for job in jobs if job.state not in TERMINAL]
        # A crash after the publish but before the journal's last write: the model says
        # which job made it, so that job succeeded.
        published = (
            {m.job_id: m for m in self._registry.manifests() if m.job_id} if unfinished else {}
        )
        for job in jobs:
            self._jobs[job.id] = job
        for job in unfinished:
            job.events = self._journal.events_now(job.id)
            job.settled, job.events_loaded = len(job.events), True
            manifest = published.get(job.id)
            if manifest is not None:
                self._succeed(job, manifest, note=" (recovered after a restart)")
            else:
                self._finish(job, FAILED, error=INTERRUPTED)
        self._prune()
        if jobs:
            log.info(
                "job journal: %d jobs restored, %d interrupted jobs ended",
                len(jobs), len(unfinished),
            )  # fmt: skip

    # -- the journal and the watchers ------------------------------------------------------

    def _succeed(self, job: Job, manifest: Manifest, note: str = "") -> None:
        job.adopt(manifest)
        message = f"published {manifest.name} version {manifest.version}{note}"
        self._finish(job, SUCCEEDED, message=message, metrics=job.metrics)

    def _finish(
        self,
        job: Job,
        state: str,
        *,
        error: str = "",
        message: str = "",
        metrics: dict[str, float] | None = None,
    ) -> None:
        job.end(state, error)
        self._record(job, stage=state, message=message or job.error, metrics=metrics, durable=True)
        self._metrics.training_jobs.labels(job.paradigm or "unknown", job.algorithm, state).inc()
        log.info("job %s %s %s", job.id, state, job.error)

    def _record(
        self,
        job: Job,
        *,
        stage: str,
        message: str = "",
        durable: bool = False,
        required: bool = False,
        **details: Any,
    ) -> asyncio.Future[None]:
        """Adds an event (progress, epoch, metrics: Job.add_event) to the job's history and
        journals it (durable: fsynced); the job's watchers are shown it once it is written.

        A write that fails is logged and the job carries on in memory (a full disk must not
        also stop running jobs), unless it is `required`: its caller awaits the future.
        """
        event = job.add_event(stage, message, **details)
        if job.trace is not None:
            if stage in TERMINAL:
                job.trace.end(stage, job.error if stage == FAILED else "")
                job.trace = None
            else:
                job.trace.stage(stage, message, details.get("epoch", 0), details.get("metrics"))
        written = asyncio.wrap_future(self._journal.save(job, event, durable=durable or required))
        written.add_done_callback(functools.partial(_settle, job, event, required=required))
        return written

    async def _written(self, job: Job, written: asyncio.Future[None]) -> None:
        """Waits for a required write; raises what to tell the caller if it failed."""
        try:
            await asyncio.shield(written)
        except (sqlite3.Error, OSError) as exc:
            raise storage_error(exc, "cannot record the job") or Unavailable(
                f"cannot record the job: {exc}"
            ) from exc
        except asyncio.CancelledError:
            # The caller went away. A job written down all the same must not stay queued
            # in the journal alone (a restart would report it interrupted): it is cancelled.
            def abandon(done: asyncio.Future[None]) -> None:
                if not done.cancelled() and done.exception() is None:
                    self._jobs[job.id] = job
                    self._finish(job, CANCELLED, error=ABANDONED)

            written.add_done_callback(abandon)
            raise


def _settle(job: Job, event: JobEvent, written: asyncio.Future[None], *, required: bool) -> None:
    """A write is done (or failed): its event may be shown to the job's watchers."""
    error = None if written.cancelled() else written.exception()
    if error is not None and not required:
        if isinstance(error, sqlite3.Error | OSError):
            log.warning("job %s: journal write failed (%s); kept in memory only", job.id, error)
        else:
            log.error("job %s: journal write failed", job.id, exc_info=error)
    job.settled = max(job.settled, event.sequence + 1)
    job.wake()


def _log_failed_prune(count: int) -> Callable[[Future[None]], None]:
    def check(done: Future[None]) -> None:
        error = done.exception()
        if error is not None:  # they go at the next prune instead
            log.warning("could not prune %d jobs from the journal: %s", count, error)

    return check


def _total_cost(outcome: Outcome) -> dict[str, float]:
    """A finished job's charges added up across devices (what a search budget counts)."""
    charges = (outcome.charges or {}).values()
    return {
        "device_seconds": sum(c.device_seconds for c in charges),
        "joules": sum(c.joules for c in charges),
        "dollars": sum(c.dollars for c in charges),
    }


def _new_id() -> str:
    return uuid.uuid4().hex[:12]

"""Training and import jobs: a bounded queue, worker processes, states and progress events.

Each job runs in its own spawned process (never fork after gRPC has started), so a crash,
a leak, a cancel or a job over max_job_seconds costs only that process. The parent reads
the worker's pipe (JSON messages; nothing is unpickled) from the event loop (add_reader: no
thread per job), keeps every event so a watcher can join late, and publishes the finished
model into the registry. Every job and event is also written to the job journal
(journal.py), so jobs outlive the server; a job that a stopped server left queued or
running is failed as interrupted at the next start, unless its model was published.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import logging
import multiprocessing
import shutil
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from service import launcher
from service.cost.ledger import Charge, CostLedger
from service.datasets.store import DatasetStore
from service.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ParadigmError,
    ResourceExhausted,
    Unavailable,
    storage_error,
)
from service.metrics import Metrics
from service.registry.manifest import Manifest
from service.registry.store import ModelRegistry, validate_model_name
from service.settings import Settings
from service.training import catalog
from service.training.journal import JOURNAL_FILE, JobEvent, JobJournal, JobRecord
from service.training.spec import ImportSpec, TrainingSpec

log = logging.getLogger(__name__)

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued", "running", "succeeded", "failed", "cancelled",
)  # fmt: skip
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
DEVICES = ("auto", "cpu", "cuda")
MAX_FINISHED_JOBS = 1000
INTERRUPTED = "interrupted: the server stopped before the job finished"

__all__ = ["Job", "JobEvent", "JobManager"]


@dataclass
class Job(JobRecord):
    """A job: its journal record plus what only the running server has."""

    #: None for a job restored from the journal (it never runs again).
    spec: TrainingSpec | ImportSpec | None = None
    process: BaseProcess | None = None
    cancel_requested: bool = False
    #: Why the server itself ended the worker (time limit, shutdown): the job's error.
    abort_reason: str = ""
    #: False for a job restored from the journal until its events are read back.
    events_loaded: bool = True
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class JobManager:
    """Owns the job queue and the worker processes."""

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
        self._ledger = ledger
        # Every (algorithm, final state) series exists from the start at 0, so increase()
        # sees a job's first failure and dashboards show zeros rather than no data.
        for algorithm in catalog.ALGORITHMS.values():
            for state in TERMINAL:
                metrics.training_jobs.labels(algorithm.paradigm, algorithm.name, state)
        self._jobs: dict[str, Job] = {}
        self._queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=settings.max_queued_jobs)
        self._runners: list[asyncio.Task[None]] = []
        self._context = multiprocessing.get_context("spawn")
        self._journal = JobJournal(registry.root / JOURNAL_FILE)
        self._restore()

    async def start(self) -> None:
        self._runners = [
            asyncio.create_task(self._run_forever(), name=f"job-runner-{i}")
            for i in range(self._settings.max_concurrent_jobs)
        ]

    async def stop(self) -> None:
        """Stops every worker; unfinished jobs end FAILED (running) or CANCELLED (queued)."""
        running = []
        for job in list(self._jobs.values()):
            if job.state == QUEUED:
                self._finish(job, CANCELLED, error="server shut down before the job started")
            elif job.state == RUNNING:
                job.abort_reason = "server shut down while the job ran"
                self._terminate(job)
                running.append(job)
        if running:
            waits = [asyncio.ensure_future(self._until_ended(job)) for job in running]
            await asyncio.wait(waits, timeout=self._settings.cancel_grace_seconds + 5.0)
            for wait in waits:
                wait.cancel()
        for runner in self._runners:
            runner.cancel()
        for runner in self._runners:
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        for job in running:
            if job.state not in TERMINAL:
                if job.process is not None and job.process.exitcode is None:
                    job.process.kill()
                self._finish(job, FAILED, error=job.abort_reason)
        self._journal.close()

    # -- requests -----------------------------------------------------------------------

    def start_training(
        self,
        *,
        dataset: str,
        algorithm: str,
        hyperparameters: Mapping[str, Any],
        model_name: str = "",
        task: str = "",
        device: str = "auto",
        seed: int | None = None,
        test_fraction: float = 0.0,
        train_size: int = 0,
        world_size: int = 0,
    ) -> Job:
        """Validates the request completely, then queues it; raises before queuing."""
        chosen = catalog.get_algorithm(algorithm)
        require_training_libraries(chosen.paradigm)
        info = self._datasets.get(dataset)
        params = catalog.resolve_hyperparameters(chosen, hyperparameters)
        resolved_task = catalog.resolve_task(chosen, info.task, task)
        if chosen.name == "cnn" and not info.image_shape:
            raise InvalidArgument(
                f"cnn needs an image dataset (rows with an image_shape, like digits); "
                f"dataset {dataset!r} has none: try mlp or lstm"
            )
        name = validate_model_name(model_name or f"{dataset}-{algorithm}")
        if device not in DEVICES:
            raise InvalidArgument(f"device {device!r} is not one of {list(DEVICES)}")
        fraction = test_fraction or 0.25
        if not 0.05 <= fraction <= 0.9:
            raise InvalidArgument(f"test_fraction {fraction} must be between 0.05 and 0.9")
        _check_train_size(train_size, resolved_task, info.n_classes)
        processes = _check_world_size(world_size, chosen, self._settings.max_world_size)
        job_id = _new_id()
        spec = TrainingSpec(
            job_id=job_id,
            dataset_dir=str(self._datasets.path(dataset)),
            algorithm=chosen.name,
            hyperparameters=params,
            task=resolved_task,
            model_name=name,
            out_dir="",  # set when it starts: staging directories are made just in time
            device=device,
            seed=0 if seed is None else seed,
            test_fraction=fraction,
            train_size=train_size,
            world_size=processes,
            blas_threads=self._settings.worker_blas_threads,
            parity_tolerance=self._settings.parity_tolerance,
        )
        job = Job(
            id=job_id,
            kind="train",
            spec=spec,
            model_name=name,
            dataset=dataset,
            algorithm=chosen.name,
            paradigm=chosen.paradigm,
            task=resolved_task,
            hyperparameters=params,
            # Shown from the start (the Job message has no field of its own for it); the
            # model's metrics carry it on, next to the train_samples actually fitted.
            metrics={"train_size": float(train_size)} if train_size else {},
            world_size=processes,
        )
        return self._enqueue(job)

    def start_import(
        self,
        *,
        source: Path,
        model_name: str,
        file_format: str,
        paradigm: str = "",
        task: str = "",
        n_features: int = 0,
        trusted_types: list[str] | None = None,
    ) -> Job:
        require_training_libraries("classical")
        name = validate_model_name(model_name)
        allowed = tuple(self._settings.skops_trusted_prefixes)
        refused = sorted(t for t in trusted_types or [] if not t.startswith(allowed))
        if refused:
            # skops builds whatever type it is told to trust, callables included: a caller
            # may widen its trust only within what the operator allows.
            raise InvalidArgument(
                f"trusted_types {refused} may not be trusted on this server: only types "
                f"starting with {list(allowed)} (the operator sets "
                "PARADIGM_SKOPS_TRUSTED_PREFIXES)"
            )
        job_id = _new_id()
        spec = ImportSpec(
            job_id=job_id,
            source_path=str(source),
            format=file_format,
            model_name=name,
            out_dir="",
            paradigm=paradigm,
            task=task,
            n_features=n_features,
            trusted_types=list(trusted_types or []),
            blas_threads=self._settings.worker_blas_threads,
            parity_tolerance=self._settings.parity_tolerance,
        )
        job = Job(
            id=job_id,
            kind="import",
            spec=spec,
            model_name=name,
            algorithm="imported",
            paradigm=paradigm,
            task=task,
        )
        return self._enqueue(job)

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
            job.events = self._journal.events(job.id)
            job.events_loaded = True
        index = 0
        while True:
            while index < len(job.events):
                yield job.events[index]
                index += 1
            if job.state in TERMINAL:
                return
            waiter = asyncio.get_running_loop().create_future()
            job.waiters.append(waiter)
            await waiter

    async def cancel(self, job_id: str) -> Job:
        """Cancels a job; a running worker is terminated, then killed after a grace."""
        job = self.get(job_id)
        if job.state in TERMINAL:
            raise FailedPrecondition(f"job {job_id!r} already ended: {job.state}")
        job.cancel_requested = True
        if job.state == QUEUED:
            self._finish(job, CANCELLED)
            return job
        self._terminate(job)
        deadline = self._settings.cancel_grace_seconds + 5.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._until_ended(job), deadline)
        return job

    # -- running --------------------------------------------------------------------------

    def _enqueue(self, job: Job) -> Job:
        if self._queue.full():
            raise ResourceExhausted(
                f"the training queue is full ({self._settings.max_queued_jobs} jobs waiting); "
                "try again later"
            )
        # Journal first: a job that could not be written down would vanish in a restart,
        # so it is refused instead (a full or read-only disk would fail its publish anyway).
        self._record(job, stage=QUEUED, message=f"{job.kind} job queued", required=True)
        self._jobs[job.id] = job
        self._queue.put_nowait(job)
        self._prune()
        self._metrics.training_queue_depth.set(self._queue.qsize())
        return job

    async def _run_forever(self) -> None:
        while True:
            job = await self._queue.get()
            self._metrics.training_queue_depth.set(self._queue.qsize())
            if job.state != QUEUED:
                continue
            try:
                await self._run(job)
            except Exception as exc:  # a bug here must not stop the runner
                log.exception("job %s: runner failed", job.id)
                if job.state not in TERMINAL:
                    self._finish(job, FAILED, error=f"internal error: {exc}")

    async def _run(self, job: Job) -> None:
        assert job.spec is not None  # only restored jobs lack one, and they are never queued
        try:
            staging = self._registry.new_staging_dir(job.id)
        except ParadigmError as exc:
            self._finish(job, FAILED, error=exc.message)
            return
        spec = _with_out_dir(job.spec, staging)
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=launcher.run_by_name,
            args=(launcher.RUN_JOB, spec, sender, self._settings.distributed_backend),
            name=f"paradigm-job-{job.id}",
            daemon=True,
        )
        job.process = process
        job.state = RUNNING
        job.started_at = datetime.now(UTC)
        if job.paradigm == "classical":
            job.device = "cpu"  # scikit-learn trains on the CPU only
        started = time.perf_counter()
        self._metrics.training_running.inc()
        self._record(
            job, stage="started", message=f"worker process starting for {job.kind}", durable=True
        )
        limit = self._settings.max_job_seconds
        timer = asyncio.get_running_loop().call_later(limit, self._over_time, job, limit)
        try:
            process.start()
            sender.close()  # our copy: the pipe reports EOF once the child's copy closes
            final = await launcher.receive(
                receiver, lambda message: self._worker_event(job, message), who=f"job {job.id}"
            )
            await asyncio.get_running_loop().run_in_executor(None, process.join)
        finally:
            timer.cancel()
            receiver.close()
            self._metrics.training_running.dec()
        exitcode = process.exitcode
        # A finished Process object holds two descriptors until closed, and up to
        # MAX_FINISHED_JOBS jobs are kept: measured 2 descriptors leaked per job.
        job.process = None
        process.close()
        elapsed = time.perf_counter() - started
        charges: dict[str, Charge] = {}
        try:
            if job.cancel_requested:
                self._finish(job, CANCELLED)
            elif job.abort_reason:
                self._finish(job, FAILED, error=job.abort_reason)
            elif final is None:
                self._finish(
                    job,
                    FAILED,
                    error=f"worker process exited with code {exitcode} before finishing",
                )
            elif final.get("type") != "done":
                self._finish(job, FAILED, error=str(final.get("message") or "worker failed"))
            else:
                usage = final.get("usage") or {}
                try:
                    # In a thread: fsyncs, or an upload to S3, must not stall serving.
                    manifest = await asyncio.to_thread(
                        self._registry.publish,
                        job.model_name,
                        staging,
                        lambda m: charges.update(self._price(m, usage)),
                        job_id=job.id,
                    )
                except ParadigmError as exc:
                    self._finish(job, FAILED, error=exc.message)
                else:
                    self._succeed(job, manifest)
            if not charges:
                # Work that published nothing still used the machine: charge what is known.
                usage = (final or {}).get("usage") or {}
                charges = self._ledger.price_training(float(usage.get("cpu_seconds", 0.0)))
            self._ledger.record_training(
                charges, paradigm=job.paradigm or "unknown", model=job.model_name,
                version=job.model_version, algorithm=job.algorithm,
            )  # fmt: skip
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(job.spec, ImportSpec):
                Path(job.spec.source_path).unlink(missing_ok=True)
        device = job.device or "cpu"
        self._metrics.training_duration.labels(
            job.paradigm or "unknown", job.algorithm, device
        ).observe(elapsed)

    def _worker_event(self, job: Job, message: dict[str, Any]) -> None:
        if job.cancel_requested:
            return
        metrics = {k: float(v) for k, v in (message.get("metrics") or {}).items()}
        if message.get("device"):
            job.device = str(message["device"])
        if "epoch_seconds" in metrics:
            self._metrics.training_epoch.labels(
                job.paradigm, job.algorithm, job.device or "cpu"
            ).observe(metrics["epoch_seconds"])
        self._record(
            job,
            stage=str(message.get("stage", "")),
            message=str(message.get("message", "")),
            progress=message.get("progress"),
            epoch=int(message.get("epoch") or 0),
            epochs=int(message.get("epochs") or 0),
            metrics=metrics,
        )

    def _price(self, manifest: Manifest, usage: dict[str, float]) -> dict[str, Charge]:
        """Prices a successful job and writes its cost into the manifest being published."""
        gpu_joules = manifest.metrics.get("gpu_joules")
        charges = self._ledger.price_training(
            float(usage.get("cpu_seconds", 0.0)),
            float(manifest.metrics.get("gpu_seconds", 0.0)),
            None if gpu_joules is None else float(gpu_joules),
        )
        sources = sorted({c.energy_source for c in charges.values() if c.energy_source})
        manifest.training_cost = {
            "cpu_seconds": charges["cpu"].device_seconds,
            "gpu_seconds": charges["cuda"].device_seconds if "cuda" in charges else 0.0,
            "joules": sum(c.joules for c in charges.values()),
            "dollars": sum(c.dollars for c in charges.values()),
            "energy_source": "+".join(sources),
        }
        samples = manifest.metrics.get("samples_processed")
        if samples:
            device = manifest.training_device or "cpu"
            self._metrics.training_samples.labels(
                manifest.paradigm, manifest.algorithm, device
            ).inc(samples)
        return charges

    def _over_time(self, job: Job, limit: float) -> None:
        if job.state != RUNNING or job.cancel_requested or job.abort_reason:
            return
        job.abort_reason = f"exceeded max_job_seconds ({limit:g} s)"
        log.warning("job %s: %s; stopping its worker", job.id, job.abort_reason)
        self._terminate(job)

    def _terminate(self, job: Job) -> None:
        process = job.process
        if process is None or process.exitcode is not None:
            return
        process.terminate()
        grace = self._settings.cancel_grace_seconds

        def kill_if_alive() -> None:
            # A job that ended meanwhile has given up (and closed) its process.
            if job.process is process and process.exitcode is None:
                log.warning("job %s: worker ignored SIGTERM; killing it", job.id)
                process.kill()

        asyncio.get_running_loop().call_later(grace, kill_if_alive)

    def _succeed(self, job: Job, manifest: Manifest, note: str = "") -> None:
        job.model_version = manifest.version
        job.metrics = dict(manifest.metrics)
        job.metrics["parity_max_abs_error"] = manifest.parity_max_abs_error
        job.device = manifest.training_device or "cpu"
        job.paradigm = manifest.paradigm
        job.task = manifest.task or job.task
        self._finish(
            job,
            SUCCEEDED,
            message=f"published {manifest.name} version {manifest.version}{note}",
            metrics=job.metrics,
        )

    def _finish(
        self,
        job: Job,
        state: str,
        *,
        error: str = "",
        message: str = "",
        metrics: dict[str, float] | None = None,
    ) -> None:
        job.state = state
        job.error = error or job.error
        job.finished_at = datetime.now(UTC)
        if state == SUCCEEDED:
            job.progress = 1.0
        self._record(job, stage=state, message=message or job.error, metrics=metrics, durable=True)
        self._metrics.training_jobs.labels(job.paradigm or "unknown", job.algorithm, state).inc()
        log.info("job %s %s %s", job.id, state, job.error)

    def _record(
        self,
        job: Job,
        *,
        stage: str,
        message: str = "",
        progress: float | None = None,
        epoch: int = 0,
        epochs: int = 0,
        metrics: dict[str, float] | None = None,
        durable: bool = False,
        required: bool = False,
    ) -> None:
        """Adds an event to the job's history, journals it and wakes the job's watchers.

        A state change is journaled `durable` (fsynced). A journal that cannot be written
        raises the caller's error when the event is `required`; otherwise it is logged and
        the job carries on in memory: a full disk must not also stop running jobs.
        """
        if progress is not None:
            job.progress = max(job.progress, min(1.0, float(progress)))
        event = JobEvent(
            sequence=len(job.events),
            time=datetime.now(UTC),
            state=job.state,
            stage=stage,
            message=message,
            epoch=epoch,
            epochs=epochs,
            metrics=dict(metrics or {}),
            progress=job.progress,
        )
        try:
            self._journal.save(job, event, durable=durable or required)
        except (sqlite3.Error, OSError) as exc:
            if required:
                raise storage_error(exc, "cannot record the job") or Unavailable(
                    f"cannot record the job: {exc}"
                ) from exc
            log.warning("job %s: journal write failed (%s); kept in memory only", job.id, exc)
        job.events.append(event)
        waiters, job.waiters = job.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _until_ended(self, job: Job) -> None:
        while job.state not in TERMINAL:
            waiter = asyncio.get_running_loop().create_future()
            job.waiters.append(waiter)
            await waiter

    def _prune(self) -> None:
        finished = [job for job in self._jobs.values() if job.state in TERMINAL]
        pruned = sorted(finished, key=lambda j: j.created_at)[:-MAX_FINISHED_JOBS]
        for job in pruned:
            del self._jobs[job.id]
        try:
            self._journal.delete(job.id for job in pruned)
        except sqlite3.Error as exc:  # they go at the next prune instead
            log.warning("could not prune %d jobs from the journal: %s", len(pruned), exc)

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
            job.events = self._journal.events(job.id)
            job.events_loaded = True
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


def _check_train_size(train_size: int, task: str, n_classes: int) -> None:
    """Refuses a train_size that cannot make a model; one larger than the split means all."""
    if train_size < 0:
        raise InvalidArgument(f"train_size {train_size} is negative; use 0 for all rows")
    if train_size == 0:
        return
    # Every class keeps a row in the subsample, and a classifier needs two classes.
    least = max(2, n_classes) if task == "classification" else 2
    if train_size < least:
        what = f"the dataset's {n_classes} classes" if task == "classification" else "a fit"
        raise InvalidArgument(
            f"train_size {train_size} is too small for {what}: use at least {least} (or 0 "
            "for the whole training split)"
        )


# What the worker processes import: the serving process itself imports none of them.
_TRAINING_LIBRARIES = {"classical": ("sklearn", "skl2onnx", "onnx"), "deep": ("torch", "onnx")}


@functools.cache
def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def require_training_libraries(paradigm: str) -> None:
    """FailedPrecondition on a serve-only install (deploy/docker's `serve` target).

    Refused before anything is queued: otherwise the job would be accepted and then fail
    in its worker with an ImportError the caller can do nothing about.
    """
    needed = _TRAINING_LIBRARIES["classical"] + _TRAINING_LIBRARIES.get(paradigm, ())
    missing = sorted({module for module in needed if _missing(module)})
    if missing:
        raise FailedPrecondition(
            f"this server cannot train or import models: {', '.join(missing)} not installed "
            "(a serve-only install); send training, imports and explanations to a server "
            "installed with the train extra (the `train` image, paradigm-trainer on Kubernetes)"
        )


def _check_world_size(world_size: int, algorithm: catalog.Algorithm, most: int) -> int:
    """The number of training processes a request asks for: 0 and 1 both mean one."""
    if world_size < 0:
        raise InvalidArgument(
            f"world_size {world_size} is negative; use 0 or 1 for one process, or 2 to "
            f"{most} for distributed (DDP) training"
        )
    if world_size <= 1:
        return 1
    if algorithm.paradigm != "deep":
        raise InvalidArgument(
            f"world_size {world_size} needs a deep algorithm: {algorithm.name} is "
            f"{algorithm.paradigm} and trains in one process; use world_size 0 or 1"
        )
    if world_size > most:
        raise InvalidArgument(
            f"world_size {world_size} is more than this server allows: at most {most} "
            "processes per job (PARADIGM_MAX_WORLD_SIZE)"
        )
    return world_size


def _new_id() -> str:
    return uuid.uuid4().hex[:12]


def _with_out_dir(spec: TrainingSpec | ImportSpec, out_dir: Path) -> TrainingSpec | ImportSpec:
    return replace(spec, out_dir=str(out_dir))

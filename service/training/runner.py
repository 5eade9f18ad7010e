"""Runs one queued job: a staging directory, a worker process, the model published, priced.

The job's states and history belong to the job manager (jobs.py): the runner reports
through `Record` and returns an `Outcome` for the manager to finish the job with.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from service import launcher
from service.cost import pricing
from service.errors import ParadigmError
from service.launcher import WorkerExit, WorkerProcess
from service.training.job import CANCELLED, FAILED, RUNNING, SUCCEEDED, Job
from service.training.spec import ImportSpec

if TYPE_CHECKING:
    from service.cost.ledger import Charge, CostLedger
    from service.metrics import Metrics
    from service.registry.manifest import Manifest
    from service.registry.store import ModelRegistry
    from service.settings import Settings
    from service.tracking.runs import JobRuns

log = logging.getLogger(__name__)


class Record(Protocol):
    """Adds an event to a job's history (JobManager._record)."""

    def __call__(
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
    ) -> object: ...


@dataclass
class Outcome:
    """How a job ended: its final state, and the model it published if it succeeded."""

    state: str
    error: str = ""
    manifest: Manifest | None = None
    #: What the job cost; None for a job that never started a worker (nothing to charge).
    charges: dict[str, Charge] | None = None
    seconds: float = 0.0


class JobRunner:
    """Runs jobs in worker processes (service/worker/entry.py:run) and publishes their models."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        metrics: Metrics,
        ledger: CostLedger,
        tracking: JobRuns | None = None,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._metrics = metrics
        self._ledger = ledger
        self._tracking = tracking

    async def run(self, job: Job, record: Record) -> Outcome:
        """Runs a queued job to its end (RUNNING meanwhile); the caller finishes it."""
        assert job.spec is not None  # only restored jobs lack one, and they are never queued
        try:
            staging = self._registry.new_staging_dir(job.id)
        except ParadigmError as exc:
            return Outcome(FAILED, exc.message)
        try:
            started = time.perf_counter()
            ended = await self._work(job, staging, record)
            if ended.start_seconds is not None:
                self._metrics.worker_start.labels(job.kind, ended.start).observe(
                    ended.start_seconds
                )
            seconds = time.perf_counter() - started
            outcome = await self._conclude(job, ended, staging)
            # Work that published nothing still used the machine: charge what is known.
            outcome.charges = outcome.charges or self._ledger.price_training(ended.cpu_seconds)
            outcome.seconds = seconds
            return outcome
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(job.spec, ImportSpec):
                Path(job.spec.source_path).unlink(missing_ok=True)

    def account(self, job: Job, outcome: Outcome) -> None:
        """Adds a finished job's cost and duration to the metrics (after its own counter,
        so a scrape in between sees a job without its cost rather than a cost without a job);
        completes the job's MLflow run, in the background."""
        if self._tracking is not None:
            self._tracking.finish(job, outcome.charges, outcome.manifest)
        if outcome.charges is None:
            return
        self._ledger.record_training(
            outcome.charges, paradigm=job.paradigm or "unknown", model=job.model_name,
            version=job.model_version, algorithm=job.algorithm,
        )  # fmt: skip
        self._metrics.training_duration.labels(
            job.paradigm or "unknown", job.algorithm, job.device or "cpu"
        ).observe(outcome.seconds)

    async def _work(self, job: Job, staging: Path, record: Record) -> WorkerExit:
        assert job.spec is not None
        worker = WorkerProcess(
            launcher.RUN_JOB,
            replace(job.spec, out_dir=str(staging)),
            name=f"paradigm-job-{job.id}",
            who=f"job {job.id}",
            grace=self._settings.cancel_grace_seconds,
            distributed_backend=self._settings.distributed_backend,
        )
        job.worker = worker
        job.state = RUNNING
        job.started_at = datetime.now(UTC)
        if job.paradigm == "classical":
            job.device = "cpu"  # scikit-learn trains on the CPU only
        if self._tracking is not None and job.kind == "train":
            self._tracking.start(job)
        self._metrics.training_running.inc()
        record(
            job, stage="started", message=f"worker process starting for {job.kind}", durable=True
        )
        limit = self._settings.max_job_seconds
        try:
            return await worker.run(
                lambda message: self._event(job, message, record),
                timeout=limit,
                on_timeout=lambda: _over_time(job, limit),
            )
        finally:
            self._metrics.training_running.dec()
            job.worker = None

    async def _conclude(self, job: Job, ended: WorkerExit, staging: Path) -> Outcome:
        final = ended.final
        if job.cancel_requested:
            return Outcome(CANCELLED)
        if job.abort_reason:
            return Outcome(FAILED, job.abort_reason)
        if final is None:
            return Outcome(
                FAILED, f"worker process exited with code {ended.exitcode} before finishing"
            )
        if final.get("type") != "done":
            return Outcome(FAILED, str(final.get("message") or "worker failed"))
        charges: dict[str, Charge] = {}
        run_id = await self._tracking.run_id(job) if self._tracking is not None else ""

        def price(manifest: Manifest) -> None:
            manifest.mlflow_run_id = run_id
            charges.update(pricing.price_published_job(self._ledger, manifest, ended.cpu_seconds))
            # Warm: the libraries were imported before the fork, so they are not in its CPU.
            manifest.training_cost["worker_start"] = ended.start
            self._count_samples(manifest)

        if job.trace is not None:
            job.trace.stage("publish")
        try:
            # In a thread: fsyncs, or an upload to S3, must not stall serving.
            manifest = await asyncio.to_thread(
                self._registry.publish, job.model_name, staging, price, job_id=job.id
            )
        except ParadigmError as exc:
            return Outcome(FAILED, exc.message, charges=charges)
        return Outcome(SUCCEEDED, manifest=manifest, charges=charges)

    def _event(self, job: Job, message: dict[str, Any], record: Record) -> None:
        if job.cancel_requested:
            return
        metrics = {k: float(v) for k, v in (message.get("metrics") or {}).items()}
        if message.get("device"):
            job.device = str(message["device"])
        if "epoch_seconds" in metrics:
            self._metrics.training_epoch.labels(
                job.paradigm, job.algorithm, job.device or "cpu"
            ).observe(metrics["epoch_seconds"])
        record(
            job,
            stage=str(message.get("stage", "")),
            message=str(message.get("message", "")),
            progress=message.get("progress"),
            epoch=int(message.get("epoch") or 0),
            epochs=int(message.get("epochs") or 0),
            metrics=metrics,
        )

    def _count_samples(self, manifest: Manifest) -> None:
        samples = manifest.metrics.get("samples_processed")
        if samples:
            device = manifest.training_device or "cpu"
            self._metrics.training_samples.labels(
                manifest.paradigm, manifest.algorithm, device
            ).inc(samples)


def _over_time(job: Job, limit: float) -> None:
    """The job's time limit passed: it fails with that, unless it already ends otherwise."""
    if job.cancel_requested or job.abort_reason:
        return
    job.abort_reason = f"exceeded max_job_seconds ({limit:g} s)"
    log.warning("job %s: %s; stopping its worker", job.id, job.abort_reason)

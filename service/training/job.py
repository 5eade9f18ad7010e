"""A training or import job as the serving process holds it: its states, its journal record
and what only the running server has (its spec, its worker, its watchers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from service.launcher import WorkerProcess
from service.training.journal import JobEvent, JobRecord
from service.training.spec import ImportSpec, TrainingSpec

if TYPE_CHECKING:
    from service.registry.manifest import Manifest
    from service.training.job_trace import JobTrace

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued", "running", "succeeded", "failed", "cancelled",
)  # fmt: skip
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})


@dataclass
class Job(JobRecord):
    """A job: its journal record plus what only the running server has."""

    #: None for a job restored from the journal (it never runs again).
    spec: TrainingSpec | ImportSpec | None = None
    worker: WorkerProcess | None = None
    cancel_requested: bool = False
    #: Why the server itself ended the worker (time limit, shutdown): the job's error.
    abort_reason: str = ""
    #: False for a job restored from the journal until its events are read back.
    events_loaded: bool = True
    #: How many of `events` the journal has written (or failed to write): watchers are shown
    #: only those, so what a watcher saw survives a killed server.
    settled: int = 0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    #: Its spans while it runs, when traces are on.
    trace: JobTrace | None = None
    #: What the job cost as the cost ledger priced it (device_seconds, joules, dollars),
    #: set as it ends; empty for a job that never ran a worker or was restored.
    cost: dict[str, float] = field(default_factory=dict)

    def add_event(
        self,
        stage: str,
        message: str = "",
        *,
        progress: float | None = None,
        epoch: int = 0,
        epochs: int = 0,
        metrics: dict[str, float] | None = None,
    ) -> JobEvent:
        """Appends the next event of the job's history; its progress never goes back."""
        if progress is not None:
            self.progress = max(self.progress, min(1.0, float(progress)))
        event = JobEvent(
            sequence=len(self.events),
            time=datetime.now(UTC),
            state=self.state,
            stage=stage,
            message=message,
            epoch=epoch,
            epochs=epochs,
            metrics=dict(metrics or {}),
            progress=self.progress,
        )
        self.events.append(event)
        return event

    def end(self, state: str, error: str = "") -> None:
        self.state = state
        self.error = error or self.error
        self.finished_at = datetime.now(UTC)
        if state == SUCCEEDED:
            self.progress = 1.0

    def adopt(self, manifest: Manifest) -> None:
        """Takes on what the model it published says (it knows best: device, task...)."""
        self.model_version = manifest.version
        self.metrics = dict(manifest.metrics)
        self.metrics["parity_max_abs_error"] = manifest.parity_max_abs_error
        self.device = manifest.training_device or "cpu"
        self.paradigm = manifest.paradigm
        self.task = manifest.task or self.task

    def wake(self) -> None:
        """Wakes everyone waiting for this job's next event or its end."""
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def changed(self) -> None:
        """Returns at the job's next settled event."""
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        await waiter

    async def history(self) -> AsyncIterator[JobEvent]:
        """Every settled event so far, then live ones, until the job has ended."""
        index = 0
        while True:
            while index < self.settled:
                yield self.events[index]
                index += 1
            if self.state in TERMINAL and index == len(self.events):
                return
            await self.changed()

    async def ended(self) -> None:
        """Returns once the job has ended and its last event is settled."""
        while self.state not in TERMINAL or self.settled < len(self.events):
            await self.changed()

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()


def training_job(spec: TrainingSpec, *, dataset: str, paradigm: str) -> Job:
    return Job(
        id=spec.job_id,
        kind="train",
        spec=spec,
        model_name=spec.model_name,
        dataset=dataset,
        algorithm=spec.algorithm,
        paradigm=paradigm,
        task=spec.task,
        hyperparameters=spec.hyperparameters,
        # Shown from the start (the Job message has no field of its own for it); the
        # model's metrics carry it on, next to the train_samples actually fitted.
        metrics={"train_size": float(spec.train_size)} if spec.train_size else {},
        world_size=spec.world_size,
    )


def import_job(spec: ImportSpec) -> Job:
    return Job(
        id=spec.job_id,
        kind="import",
        spec=spec,
        model_name=spec.model_name,
        algorithm="imported",
        paradigm=spec.paradigm,
        task=spec.task,
    )

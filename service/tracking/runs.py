"""Every training job as an MLflow run: created when the job starts, completed when it ends.

Off the job's critical path: the calls run on two threads of their own (one creates runs,
one completes them), so a slow or dead tracking server delays no job. The one wait is for
the run's id before the model is published (bounded by the timeout), so the model version
can name its run. A call that fails is logged as a warning and counted in
paradigm_mlflow_failures_total{what}; the job goes on as if tracking were off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from service.registry.manifest import MANIFEST_FILE, MODEL_FILE
from service.tracking.rest import Metric, MlflowRest, Run, TrackingError

if TYPE_CHECKING:
    from service.cost.ledger import Charge
    from service.metrics import Metrics
    from service.registry.manifest import Manifest
    from service.settings import Settings
    from service.training.job import Job
    from service.training.spec import TrainingSpec

log = logging.getLogger(__name__)

#: How a job's final state reads as a run status.
RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


@dataclass
class RunRecord:
    """What a finished job logs, gathered on the event loop (the job keeps changing there)."""

    job_id: str
    status: str
    end_time_ms: int
    params: dict[str, str]
    metrics: list[Metric]
    tags: dict[str, str]
    #: The published model's files; none for a job that published nothing.
    manifest_json: str = ""
    model_file: Callable[[], Path] | None = None
    errors: list[str] = field(default_factory=list)


class JobRuns:
    """Owns the MLflow runs of the jobs of this server."""

    def __init__(
        self, settings: Settings, metrics: Metrics, model_path: Callable[[Manifest], Path]
    ) -> None:
        self._timeout = settings.mlflow_timeout_seconds
        self._rest = MlflowRest(settings.mlflow_tracking_uri, timeout=self._timeout)
        self._experiment = settings.mlflow_experiment
        self._metrics = metrics
        self._model_path = model_path
        self._experiment_id = ""
        self._starts = ThreadPoolExecutor(1, thread_name_prefix="mlflow-start")
        self._ends = ThreadPoolExecutor(1, thread_name_prefix="mlflow-end")
        self._runs: dict[str, Future[Run | None]] = {}
        self._pending: set[Future[None]] = set()

    def start(self, job: Job) -> None:
        """Creates the job's run, in the background."""
        tags = {
            "paradigm": job.paradigm,
            "algorithm": job.algorithm,
            "dataset": job.dataset,
            "model": job.model_name,
            "job_id": job.id,
        }
        started = _ms(job.started_at or datetime.now(UTC))
        name = f"{job.model_name}-{job.id}"
        self._runs[job.id] = self._starts.submit(self._create, job.id, name, started, tags)

    async def run_id(self, job: Job) -> str:
        """The job's run id, once created ("" if tracking of it failed or takes too long)."""
        created = self._runs.get(job.id)
        if created is None:
            return ""
        try:
            waiting = asyncio.shield(asyncio.wrap_future(created))
            run = await asyncio.wait_for(waiting, self._timeout)
        except TimeoutError:
            log.warning(
                "job %s: the MLflow run was not created within %g s; the model will not "
                "name it", job.id, self._timeout,
            )  # fmt: skip
            return ""
        return run.run_id if run is not None else ""

    def finish(
        self, job: Job, charges: dict[str, Charge] | None, manifest: Manifest | None
    ) -> None:
        """Completes the job's run in the background: params, metrics, tags, artifacts, status."""
        created = self._runs.pop(job.id, None)
        if created is None:
            return
        record = _record(job, charges, manifest, self._model_path)
        done = self._ends.submit(self._complete, created, record)
        self._pending.add(done)
        done.add_done_callback(self._pending.discard)

    async def close(self) -> None:
        """Waits a little for runs still being completed, then gives up on the rest."""
        waiting = list(self._pending)
        if waiting:
            await asyncio.wait([asyncio.wrap_future(f) for f in waiting], timeout=self._timeout * 2)
        self._starts.shutdown(wait=False, cancel_futures=True)
        self._ends.shutdown(wait=False, cancel_futures=True)

    # -- on the tracking threads -----------------------------------------------------------

    def _create(self, job_id: str, name: str, started_ms: int, tags: dict[str, str]) -> Run | None:
        try:
            if not self._experiment_id:
                self._experiment_id = self._rest.experiment_id(self._experiment)
            return self._rest.create_run(
                self._experiment_id, name=name, start_time_ms=started_ms, tags=tags
            )
        except TrackingError as error:
            self._failed("run", job_id, error)
            return None

    def _complete(self, created: Future[Run | None], record: RunRecord) -> None:
        try:
            run = created.result()
        except Exception:  # a bug creating it: already logged by the executor's caller
            log.exception("job %s: creating the MLflow run failed", record.job_id)
            run = None
        if run is None:
            return  # counted when its creation failed
        try:
            self._rest.log_batch(
                run.run_id, params=record.params, metrics=record.metrics, tags=record.tags
            )
        except TrackingError as error:
            self._failed("data", record.job_id, error)
        if record.model_file is not None:
            try:
                self._upload(run, record)
            except (TrackingError, OSError) as error:
                self._failed("artifacts", record.job_id, error)
        try:
            self._rest.end_run(run.run_id, status=record.status, end_time_ms=record.end_time_ms)
        except TrackingError as error:
            self._failed("end", record.job_id, error)

    def _upload(self, run: Run, record: RunRecord) -> None:
        assert record.model_file is not None
        self._rest.upload_artifact(run, MODEL_FILE, record.model_file())
        # The manifest as published (the staging copy is gone by now).
        self._rest.upload_artifact(run, MANIFEST_FILE, record.manifest_json.encode())

    def _failed(self, what: str, job_id: str, error: Exception) -> None:
        self._metrics.mlflow_failures.labels(what).inc()
        log.warning("job %s: MLflow tracking: could not log the %s: %s", job_id, what, error)


def _record(
    job: Job,
    charges: dict[str, Charge] | None,
    manifest: Manifest | None,
    model_path: Callable[[Manifest], Path],
) -> RunRecord:
    ended = job.finished_at or datetime.now(UTC)
    params = _params(job)
    metrics = [
        Metric(key, float(value), _ms(event.time), event.epoch)
        for event in job.events
        if event.stage == "epoch"
        for key, value in event.metrics.items()
    ]
    end_ms = _ms(ended)
    tags = {"device": job.device or "cpu", "job_state": job.state}
    if job.error:
        tags["error"] = job.error
    if manifest is not None:
        metrics += [Metric(k, float(v), end_ms) for k, v in manifest.metrics.items()]
        metrics.append(Metric("parity_max_abs_error", manifest.parity_max_abs_error, end_ms))
        tags |= {
            "dataset_fingerprint": manifest.dataset_fingerprint,
            "model_version": manifest.version,
            "device": manifest.training_device or tags["device"],
        }
    if charges is not None:
        metrics += _cost(charges, end_ms)
        sources = sorted({c.energy_source for c in charges.values() if c.energy_source})
        tags["energy_source"] = "+".join(sources)
    record = RunRecord(
        job_id=job.id,
        status=RUN_STATUS.get(job.state, "FAILED"),
        end_time_ms=end_ms,
        params=params,
        metrics=metrics,
        tags=tags,
    )
    if manifest is not None:
        record.manifest_json = manifest.to_json()
        record.model_file = lambda: model_path(manifest)  # may download (S3): on the thread
    return record


def _params(job: Job) -> dict[str, str]:
    params: dict[str, Any] = dict(job.hyperparameters)
    params["dataset"] = job.dataset
    params["model_name"] = job.model_name
    if job.kind == "train" and job.spec is not None:
        spec = cast("TrainingSpec", job.spec)
        params |= {
            "seed": spec.seed,
            "test_fraction": spec.test_fraction,
            "train_size": spec.train_size,
            "world_size": spec.world_size,
            "task": spec.task,
            "requested_device": spec.device,
        }
        if spec.image_features:
            params["image_features"] = spec.image_features
    return {key: str(value) for key, value in params.items()}


def _cost(charges: dict[str, Charge], at_ms: int) -> list[Metric]:
    """The job's priced cost, as Paradigm's cost counters got it."""
    total = {
        "cost_device_seconds": sum(c.device_seconds for c in charges.values()),
        "cost_joules": sum(c.joules for c in charges.values()),
        "cost_dollars": sum(c.dollars for c in charges.values()),
    }
    for device, charge in charges.items():
        total[f"cost_{device}_seconds"] = charge.device_seconds
    return [Metric(key, value, at_ms) for key, value in total.items()]


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)

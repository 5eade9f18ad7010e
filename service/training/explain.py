"""Explain: permutation importance of a published model, scored through ONNX Runtime.

Two halves. `Explainer` lives in the serving process: it validates the request, queues it
(one explanation runs at a time; a few may wait, more get RESOURCE_EXHAUSTED), starts a
spawned worker per explanation and prices the worker's CPU time like training. The worker
runs service/worker/importance.py: it rebuilds the rows, wraps the ONNX model as a
scikit-learn estimator and runs sklearn.inspection.permutation_importance.

Why a fresh worker per explanation, not a pool: the worker answers in JSON over a one-way
pipe (nothing it sends is unpickled, as with training jobs), a caller's deadline is met by
killing it, and its whole rusage is the explanation's cost, worker start included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service import launcher
from service.cost import pricing
from service.datasets import layout
from service.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ParadigmError,
    ResourceExhausted,
    Unavailable,
)
from service.launcher import WorkerProcess
from service.registry.manifest import Manifest
from service.training.spec import SCORING, CompareSpec, ExplainSpec, feature_names
from service.training.validation import require_training_libraries

if TYPE_CHECKING:
    from pathlib import Path

    from service.cost.ledger import Charge, CostLedger
    from service.datasets.layout import DatasetInfo
    from service.datasets.store import DatasetStore
    from service.registry.store import ModelRegistry
    from service.settings import Settings

log = logging.getLogger(__name__)

#: Metrics a comparison can recompute on shared rows, by task.
COMPARABLE_METRICS = {"classification": ("accuracy", "f1_macro"), "regression": ("r2", "rmse")}
DEFAULT_REPEATS = 5
DEFAULT_ROWS = 2000
MAX_REPEATS = 100
MAX_ROWS = 100_000
_ERRORS: dict[str, type[ParadigmError]] = {
    cls.status.name: cls
    for cls in (InvalidArgument, NotFound, FailedPrecondition, DeadlineExceeded, Unavailable)
}


@dataclass
class FeatureScore:
    """One input feature: the score's mean drop when shuffled, and the model's own weight."""

    feature: str
    importance_mean: float
    importance_std: float
    native: float | None = None


@dataclass
class Explanation:
    """What Explain answers; features are sorted most important first."""

    manifest: Manifest
    dataset: str
    rows: int
    metric: str
    baseline_score: float
    features: list[FeatureScore]
    native_kind: str
    seconds: float
    charge: Charge


class Explainer:
    """Runs explanations in spawned workers, one at a time, within the caller's deadline."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        datasets: DatasetStore,
        ledger: CostLedger,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._datasets = datasets
        self._ledger = ledger
        # One worker at a time: permutation importance is CPU-bound, and the cores are
        # shared with serving and training.
        self._slot = asyncio.Semaphore(1)
        self._waiting = 0
        self._running: set[WorkerProcess] = set()
        self._stopped = False

    async def explain(
        self,
        *,
        name: str,
        version: str = "",
        dataset: str = "",
        n_repeats: int = 0,
        max_rows: int = 0,
        seed: int = 0,
        timeout: float | None = None,
    ) -> Explanation:
        """Explains a model version; `timeout` is what is left of the caller's deadline."""
        started = time.perf_counter()
        require_training_libraries("classical")  # scikit-learn's permutation importance
        n_repeats, max_rows = _check_limits(n_repeats, max_rows, seed)
        manifest = self._registry.get(name, version)
        task, output = _scoring(manifest)
        dataset_name = dataset or manifest.dataset
        dataset_dir, info = self._dataset(manifest, dataset_name)
        # The training job's test rows only if this is the very data it was split from.
        same_split = (
            dataset_name == manifest.dataset
            and info.fingerprint == manifest.dataset_fingerprint
            and manifest.test_fraction > 0
        )
        budget = self._settings.max_job_seconds if timeout is None else timeout
        budget = min(budget, self._settings.max_job_seconds)
        # Off the loop: with artifacts on S3 this downloads the file first.
        model_path = await asyncio.to_thread(self._registry.model_path, manifest)
        spec = ExplainSpec(
            model_path=str(model_path),
            task=task,
            input=manifest.inputs[0].name,
            output=output,
            dataset_dir=str(dataset_dir),
            same_split=same_split,
            split_seed=manifest.split_seed,
            test_fraction=manifest.test_fraction,
            n_repeats=n_repeats,
            max_rows=max_rows,
            seed=seed,
            deadline=time.time() + budget,
            blas_threads=self._settings.worker_blas_threads,
        )
        result, cpu_seconds = await self._run_in_worker(spec, started + budget)
        charge = pricing.charge_explanation(self._ledger, manifest, cpu_seconds)
        return Explanation(
            manifest=manifest,
            dataset=dataset_name,
            rows=int(result["rows"]),
            metric=str(result["metric"]),
            baseline_score=float(result["baseline"]),
            features=_feature_scores(result, manifest, info),
            native_kind=manifest.native_kind if manifest.native_importances else "",
            seconds=time.perf_counter() - started,
            charge=charge,
        )

    async def compare(
        self, candidate: Manifest, holder: Manifest, metric: str, timeout: float | None = None
    ) -> tuple[int, float, float, Charge]:
        """Scores two versions of one dataset on the rows both held out from training (their
        recorded splits), in a worker: (rows, candidate's score, holder's score, what the
        worker cost, charged under phase "compare"). FailedPrecondition where they cannot be
        compared so; InvalidArgument when too few rows are shared."""
        started = time.perf_counter()
        require_training_libraries("classical")
        dataset_dir, output = self._comparable(candidate, holder, metric)
        budget = min(
            self._settings.max_job_seconds if timeout is None else timeout,
            self._settings.max_job_seconds,
        )
        paths = [
            str(await asyncio.to_thread(self._registry.model_path, manifest))
            for manifest in (candidate, holder)
        ]
        spec = CompareSpec(
            model_paths=tuple(paths),
            splits=tuple((m.split_seed, m.test_fraction) for m in (candidate, holder)),
            task=candidate.task,
            input=candidate.inputs[0].name,
            output=output,
            metric=metric,
            dataset_dir=str(dataset_dir),
            deadline=time.time() + budget,
            blas_threads=self._settings.worker_blas_threads,
        )
        result, cpu_seconds = await self._run_in_worker(
            spec, started + budget, entry=launcher.RUN_COMPARE
        )
        charges = self._ledger.price_training(cpu_seconds)
        self._ledger.record_training(
            charges, paradigm=candidate.paradigm, model=candidate.name,
            version=candidate.version, algorithm=candidate.algorithm, phase="compare",
        )  # fmt: skip
        candidate_score, holder_score = (float(v) for v in result["scores"])
        return int(result["rows"]), candidate_score, holder_score, charges["cpu"]

    def _comparable(self, candidate: Manifest, holder: Manifest, metric: str) -> tuple[Path, str]:
        """The dataset directory and output to score, or FailedPrecondition saying why the
        two cannot be scored on shared rows."""
        pair = f"versions {candidate.version} and {holder.version}"
        if candidate.task != holder.task or candidate.task not in COMPARABLE_METRICS:
            raise FailedPrecondition(
                f"{pair} cannot be scored on shared rows: tasks {candidate.task!r} and "
                f"{holder.task!r} (classification or regression, both the same, can)"
            )
        if metric not in COMPARABLE_METRICS[candidate.task]:
            raise FailedPrecondition(
                f"{metric!r} cannot be recomputed on shared rows; use one of "
                f"{list(COMPARABLE_METRICS[candidate.task])}"
            )
        if not candidate.dataset or (candidate.dataset, candidate.dataset_fingerprint) != (
            holder.dataset,
            holder.dataset_fingerprint,
        ):
            raise FailedPrecondition(
                f"{pair} were not trained on the same dataset (or one was imported): there "
                "are no rows both held out"
            )
        if candidate.test_fraction <= 0 or holder.test_fraction <= 0:
            raise FailedPrecondition(f"{pair}: one records no held-out split")
        output = SCORING[candidate.task][1]
        for manifest in (candidate, holder):
            if output not in [o.name for o in manifest.outputs] or len(manifest.inputs) != 1:
                raise FailedPrecondition(
                    f"version {manifest.version} does not take one input and give {output!r}"
                )
        dataset_dir = self._datasets.path(candidate.dataset)
        info = layout.read_info(dataset_dir)
        if info.fingerprint != candidate.dataset_fingerprint:
            raise FailedPrecondition(
                f"dataset {candidate.dataset!r} changed since {pair} were trained on it"
            )
        if info.is_table or info.is_images:
            raise FailedPrecondition(
                f"dataset {candidate.dataset!r} is {'a table' if info.is_table else 'images'}: "
                "shared held-out rows are scored for array datasets only; train both with the "
                "same seed to compare their recorded metrics"
            )
        return dataset_dir, output

    def _dataset(self, manifest: Manifest, name: str) -> tuple[Path, DatasetInfo]:
        """The directory and info of the dataset to explain a model on, if it fits it."""
        if not name:
            raise InvalidArgument(
                f"model {manifest.name!r} version {manifest.version} was imported, so it has "
                "no training dataset: name a dataset to explain it on"
            )
        dataset_dir = self._datasets.path(name)
        info = layout.read_info(dataset_dir)
        if info.is_table or info.is_images:
            kind = "a table" if info.is_table else "an image upload"
            raise FailedPrecondition(
                f"dataset {name!r} is {kind}: explain permutes the features of array datasets "
                "(npz uploads, built-in and generated ones); table and image models are not "
                "explained yet"
            )
        n_features = _feature_count(manifest)
        if n_features > 0 and info.n_features != n_features:
            raise InvalidArgument(
                f"dataset {name!r} has {info.n_features} features, but model "
                f"{manifest.name!r} takes {n_features}"
            )
        return dataset_dir, info

    async def stop(self) -> None:
        """Ends running workers; their callers get UNAVAILABLE."""
        self._stopped = True
        for worker in list(self._running):
            worker.kill()

    async def _run_in_worker(
        self,
        spec: ExplainSpec | CompareSpec,
        deadline: float,
        entry: str = launcher.RUN_EXPLAIN,
    ) -> tuple[dict[str, Any], float]:
        if self._stopped:
            raise Unavailable("the server is shutting down")
        limit = self._settings.max_queued_explains
        if self._slot.locked() and self._waiting >= limit:
            raise ResourceExhausted(
                f"{self._waiting} explanations are already waiting for the explain worker "
                f"(at most {limit}); try again later"
            )
        self._waiting += 1
        try:
            await asyncio.wait_for(self._slot.acquire(), max(0.0, deadline - time.perf_counter()))
        except TimeoutError:
            raise DeadlineExceeded(
                "the deadline passed while waiting for the explain worker"
            ) from None
        finally:
            self._waiting -= 1
        try:
            return await self._spawn(spec, deadline, entry)
        finally:
            self._slot.release()

    async def _spawn(
        self, spec: ExplainSpec | CompareSpec, deadline: float, entry: str
    ) -> tuple[dict[str, Any], float]:
        worker = WorkerProcess(
            entry,
            spec,
            name="paradigm-explain",
            who="the explain worker",
            grace=0.0,  # nothing to clean up: it writes nothing
        )
        self._running.add(worker)
        try:
            ended = await worker.run(timeout=max(0.0, deadline - time.perf_counter()))
        finally:
            self._running.discard(worker)
        final = ended.final
        if ended.timed_out:
            if isinstance(spec, CompareSpec):
                raise DeadlineExceeded("the comparison did not finish within the deadline")
            raise DeadlineExceeded(
                f"the explanation did not finish within the deadline ({spec.n_repeats} "
                "repeats per feature; ask for fewer repeats or rows)"
            )
        if self._stopped and (final is None or final.get("type") != "done"):
            raise Unavailable("the server shut down while the explanation ran")
        if final is None:
            raise Unavailable(
                f"the explain worker exited with code {ended.exitcode} before answering"
            )
        if final.get("type") != "done":
            message = str(final.get("message") or "the explain worker failed")
            error = _ERRORS.get(str(final.get("status") or ""))
            if error is None:  # a bug: INTERNAL with a request id, the trace in the log
                raise RuntimeError(f"explain worker failed: {message}")
            raise error(message)
        return final["result"], ended.cpu_seconds


def _feature_scores(
    result: dict[str, Any], manifest: Manifest, info: DatasetInfo
) -> list[FeatureScore]:
    """The worker's importances by feature, most important first (stable: equal importances
    keep the input order)."""
    names = manifest.feature_names or feature_names(info.feature_names, info.n_features)
    native = manifest.native_importances
    features = [
        FeatureScore(
            feature=names[i] if i < len(names) else f"x{i}",
            importance_mean=float(mean),
            importance_std=float(std),
            native=float(native[i]) if i < len(native) else None,
        )
        for i, (mean, std) in enumerate(zip(result["mean"], result["std"], strict=True))
    ]
    features.sort(key=lambda f: -f.importance_mean)
    return features


def _check_limits(n_repeats: int, max_rows: int, seed: int) -> tuple[int, int]:
    if not 0 <= n_repeats <= MAX_REPEATS:
        raise InvalidArgument(
            f"n_repeats {n_repeats} must be between 1 and {MAX_REPEATS} (0 means {DEFAULT_REPEATS})"
        )
    if not 0 <= max_rows <= MAX_ROWS:
        raise InvalidArgument(
            f"max_rows {max_rows} must be between 1 and {MAX_ROWS} (0 means {DEFAULT_ROWS})"
        )
    # numpy and scikit-learn take seeds of 32 bits.
    if not 0 <= seed < 2**32:
        raise InvalidArgument(f"seed {seed} must be between 0 and {2**32 - 1}")
    return n_repeats or DEFAULT_REPEATS, max_rows or DEFAULT_ROWS


def _scoring(manifest: Manifest) -> tuple[str, str]:
    """The task and the output a model is scored on; FailedPrecondition if it has none."""
    what = f"model {manifest.name!r} version {manifest.version}"
    if manifest.task == "anomaly_detection":
        raise FailedPrecondition(
            f"{what} is an anomaly detector: it has no labels or targets to score against, "
            "so there is no score for permutation importance to drop; explain a classifier "
            "or a regressor"
        )
    if manifest.task not in SCORING:
        raise FailedPrecondition(
            f"{what} has no known task (imported without one), so there is no score to "
            "explain it by; import it with a task of classification or regression"
        )
    output = SCORING[manifest.task][1]
    outputs = [o.name for o in manifest.outputs]
    if output not in outputs:
        raise FailedPrecondition(
            f"{what} is a {manifest.task} model without a {output!r} output (it has "
            f"{outputs}); explain scores that output"
        )
    if len(manifest.inputs) != 1 or manifest.inputs[0].datatype != "FP32":
        raise FailedPrecondition(
            f"{what} does not take one FP32 input of feature rows; explain permutes the "
            "columns of such an input"
        )
    return manifest.task, output


def _feature_count(manifest: Manifest) -> int:
    shape = manifest.inputs[0].shape
    return int(shape[-1]) if len(shape) == 2 else -1

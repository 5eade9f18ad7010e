"""The measurements: learning curves, a CPU/GPU check, a random search, explanations, serving.

Everything goes through the public API (ParadigmClient); training jobs run on the server,
`Plan.parallel_jobs` at a time, each followed to its end with WatchJob. A job that fails is
recorded with its error and the run goes on: the report says what is missing.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tqdm import tqdm

from clients import dtypes
from clients.bench.load import InputSpec, make_request, run_load
from clients.client import (
    JobFailed,
    ParadigmClient,
    ParadigmClientError,
    enum_name,
    from_param_value,
)
from clients.compare import cascades, tuning
from clients.compare.plan import FULL, DatasetPlan, Plan
from clients.compare.records import (
    DEEP,
    VARIANT,
    Measurements,
    Run,
    base_algorithm,
    image_features,
)
from service.gen.paradigm.v1 import paradigm_pb2 as pb

_TYPES = {
    pb.Hyperparameter.TYPE_INT: "int",
    pb.Hyperparameter.TYPE_FLOAT: "float",
    pb.Hyperparameter.TYPE_CHOICE: "choice",
    pb.Hyperparameter.TYPE_BOOL: "bool",
}
DEFAULT_TEST_FRACTION = 0.25
#: best_trial of a search whose trials all scored below the defaults on the search split.
DEFAULTS_TRIAL = -1


def _data_kind(dataset: pb.Dataset) -> str:
    """images (uint8 pixels), text (a table with a text column), table, or arrays."""
    if len(dataset.image_shape) == 3:
        return "images"
    if any(c.kind == pb.COLUMN_KIND_TEXT for c in dataset.columns):
        return "text"
    return "table" if dataset.columns else "arrays"


def _paradigm(number: int) -> str:
    return enum_name(pb.Paradigm, "PARADIGM_", number)


def catalog_entry(algorithm: pb.Algorithm) -> dict[str, Any]:
    """One ListAlgorithms entry as plain data."""
    return {
        "name": algorithm.name,
        "paradigm": _paradigm(algorithm.paradigm),
        "tasks": [enum_name(pb.Task, "TASK_", t) for t in algorithm.tasks],
        "description": algorithm.description,
        "hyperparameters": [
            {
                "name": h.name,
                "type": _TYPES.get(h.type, "unspecified"),
                "default": from_param_value(h.default),
                "minimum": h.minimum if h.HasField("minimum") else None,
                "maximum": h.maximum if h.HasField("maximum") else None,
                "choices": list(h.choices),
            }
            for h in algorithm.hyperparameters
        ],
    }


def _cost(cost: pb.Cost) -> dict[str, Any]:
    return {
        "device_seconds": cost.device_seconds,
        "joules": cost.joules,
        "dollars": cost.dollars,
        "energy_source": cost.energy_source,
    }


def _seconds_between(start: Any, end: Any) -> float:
    if not start.seconds or not end.seconds:
        return 0.0
    return (end.ToNanoseconds() - start.ToNanoseconds()) / 1e9


def per_paradigm(models: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Serving cost per 1 000 predictions per (paradigm, device), from the served models'
    totals in the cost report (not the report's own per-paradigm lines, which would also
    count whatever else a shared server served)."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for model in models:
        key = (model["paradigm"], model["device"])
        group = groups.setdefault(
            key, {"predictions": 0, "device_seconds": 0.0, "joules": 0.0, "dollars": 0.0,
                  "sources": set()},
        )  # fmt: skip
        group["predictions"] += model["predictions"]
        for field in ("device_seconds", "joules", "dollars"):
            group[field] += model["total"][field]
        if model["total"]["energy_source"]:
            group["sources"].add(model["total"]["energy_source"])
    result = []
    for (paradigm, device), group in groups.items():
        n = group["predictions"]
        if not n:
            continue
        per_1k = {f: 1000 * group[f] / n for f in ("device_seconds", "joules", "dollars")}
        per_1k["energy_source"] = "+".join(sorted(group["sources"]))
        result.append({"paradigm": paradigm, "device": device, "predictions": n, "per_1k": per_1k})
    return sorted(result, key=lambda g: (g["paradigm"], g["device"]))


class Runner:
    """Runs a Plan against one server and fills a Measurements."""

    def __init__(
        self,
        client: ParadigmClient,
        target: str,
        plan: Plan,
        measurements: Measurements,
        *,
        prefix: str = "compare",
        progress: bool = True,
    ) -> None:
        self.client = client
        self.target = target
        self.plan = plan
        self.m = measurements
        self.prefix = prefix
        self.progress = progress
        self._lock = threading.Lock()
        self.model_names: set[str] = set()

    # -- set-up ------------------------------------------------------------------------

    def setup(self) -> None:
        """The catalog, the server's prices and each dataset (generated when asked for)."""
        self.m.catalog = [catalog_entry(a) for a in self.client.list_algorithms()]
        report = self.client.cost_report()
        self.m.meta["prices_per_device_hour"] = dict(report.price_per_device_hour)
        names = [d.name for d in self.plan.datasets]
        for extra in (self.plan.tuning, self.plan.explain, self.plan.serving):
            if extra is not None and extra.dataset not in names:
                names.append(extra.dataset)
        for name in names:
            self.m.datasets[name] = self._dataset(name, self.plan.dataset(name))

    def _dataset(self, name: str, dataset_plan: DatasetPlan | None) -> dict[str, Any]:
        generated: float | None = None
        try:
            dataset = self.client.get_dataset(name)
        except ParadigmClientError as error:
            spec = dataset_plan.generate if dataset_plan else None
            if error.code == grpc.StatusCode.NOT_FOUND and dataset_plan and dataset_plan.reviews:
                return self._dataset_from_reviews(name, dataset_plan)
            if error.code != grpc.StatusCode.NOT_FOUND or spec is None:
                raise
            print(f"generating {name}: {spec.n_samples} {spec.generator} samples ...", flush=True)
            started = time.monotonic()
            dataset = self.client.generate_dataset(
                name,
                spec.n_samples,
                generator=spec.generator,
                image_size=spec.image_size,
                seed=spec.seed,
            )
            generated = time.monotonic() - started
        fraction = (dataset_plan.test_fraction if dataset_plan else 0.0) or DEFAULT_TEST_FRACTION
        n = int(dataset.n_samples)
        return {
            "task": enum_name(pb.Task, "TASK_", dataset.task),
            "n_samples": n,
            "n_features": int(dataset.n_features),
            "n_classes": int(dataset.n_classes),
            "image_shape": list(dataset.image_shape),
            "feature_names": list(dataset.feature_names),
            "test_fraction": fraction,
            "n_train": n - math.ceil(fraction * n),
            "builtin": dataset.builtin,
            "generate_seconds": generated,
            # Tables: how many columns of each kind models take, and how much is missing.
            "column_kinds": dict(
                Counter(
                    enum_name(pb.ColumnKind, "COLUMN_KIND_", c.kind)
                    for c in dataset.columns
                    if c.kind not in (pb.COLUMN_KIND_IGNORED, pb.COLUMN_KIND_TEXT)
                )
            ),
            "missing_cells": sum(int(c.missing) for c in dataset.columns),
            "data_kind": _data_kind(dataset),
        }

    def _dataset_from_reviews(self, name: str, dataset_plan: DatasetPlan) -> dict[str, Any]:
        """Uploads the generated review corpus (clients/bench/reviews.py) as a CSV table with
        a text column: the text dataset of the run."""
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        from clients.bench.reviews import reviews

        print(f"uploading {name}: {dataset_plan.reviews} generated reviews ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="paradigm-compare-") as tmp:
            path = Path(tmp) / f"{name}.csv"
            pa_csv.write_csv(pa.table(reviews(dataset_plan.reviews, seed=0)), path)
            self.client.upload_dataset(name, path, label_column="sentiment")
        return self._dataset(name, None)

    def sizes(self, dataset_plan: DatasetPlan) -> list[int]:
        """The plan's sizes that fit the training split, FULL last, without repeats."""
        n_train = int(self.m.datasets[dataset_plan.name]["n_train"])
        sizes = sorted({s for s in dataset_plan.sizes if 0 < s < n_train})
        return [*sizes, FULL]

    # -- training jobs -----------------------------------------------------------------

    def _model_name(self, run: Run) -> str:
        kind = "" if run.purpose == "curve" else f"-{run.purpose}"
        name = f"{self.prefix}-{run.dataset}-{run.algorithm}{kind}"
        return name.replace("_", "-").replace(VARIANT, "-")

    def train(self, run: Run) -> Run:
        """Runs one job to its end and fills in what the server measured."""
        plan = self.plan.dataset(run.dataset)
        params = {**(plan.overrides.get(run.algorithm, {}) if plan else {}), **run.hyperparameters}
        stages: dict[str, None] = {}
        preprocessing: list[str] = []

        def on_event(event: pb.JobEvent) -> None:
            stages.setdefault(event.stage, None)
            if event.stage == "preprocessing" and event.message not in preprocessing:
                preprocessing.append(event.message)

        name = self._model_name(run)
        with self._lock:
            self.model_names.add(name)
        try:
            job = self.client.start_training(
                run.dataset,
                base_algorithm(run.algorithm),
                image_features=image_features(run.algorithm),
                hyperparameters=params,
                model_name=name,
                device=run.device_requested,
                seed=run.seed,
                test_fraction=plan.test_fraction if plan else 0.0,
                train_size=run.size,
            )
            run.job_id = job.id
            job = self.client.wait_for_job(job.id, on_event=on_event)
            model = self.client.get_model(job.model_name, job.model_version)
        except JobFailed as failed:
            run.error = failed.job.error or str(failed)
            run.device = failed.job.device
            return run
        except ParadigmClientError as error:
            run.error = str(error)
            return run
        run.ok = True
        run.model_name, run.model_version = job.model_name, job.model_version
        run.device = job.device
        run.task = enum_name(pb.Task, "TASK_", job.task)
        run.metrics = dict(job.metrics)
        run.cost = _cost(model.training_cost)
        run.worker_seconds = _seconds_between(job.started_at, job.finished_at)
        run.stages = list(stages)
        run.preprocessing = preprocessing
        if "server_libraries" not in self.m.meta or run.paradigm == DEEP:
            self.m.meta["server_libraries"] = {
                **self.m.meta.get("server_libraries", {}),
                **dict(model.library_versions),
            }
        return run

    def train_all(self, runs: Sequence[Run], description: str) -> list[Run]:
        """Trains every run, a few at once; returns them in the order given."""
        if not runs:
            return []
        # One more in flight than the server runs at once, so its queue never runs dry.
        workers = max(1, self.plan.parallel_jobs + 1)
        failed = 0
        with (
            ThreadPoolExecutor(max_workers=workers) as pool,
            tqdm(total=len(runs), desc=description, unit="job", disable=not self.progress) as bar,
        ):
            futures = [pool.submit(self.train, run) for run in runs]
            for future in as_completed(futures):
                run = future.result()
                failed += not run.ok
                bar.set_postfix_str(
                    f"{run.algorithm} n={run.size or 'full'}"
                    + (f" failed={failed}" if failed else ""),
                    refresh=False,
                )
                bar.update(1)
        with self._lock:
            self.m.runs.extend(runs)
        for run in runs:
            if not run.ok:
                self.note(
                    f"{run.purpose} job {run.algorithm} on {run.dataset} "
                    f"(size {run.size or 'full'}, seed {run.seed}) failed: {run.error}"
                )
        return list(runs)

    def note(self, text: str) -> None:
        with self._lock:
            self.m.notes.append(text)

    def find(self, dataset: str, algorithm: str, seed: int, size: int = FULL) -> Run | None:
        """A finished default-configuration run (learning curve or extra default run)."""
        for run in self.m.runs:
            if (
                run.ok
                and run.purpose in ("curve", "default")
                and run.dataset == dataset
                and run.algorithm == algorithm
                and run.seed == seed
                and run.size == size
                and run.device_requested == "auto"
            ):
                return run
        return None

    def ensure_defaults(
        self, wanted: Iterable[tuple[str, str, int]], description: str
    ) -> dict[tuple[str, str, int], Run | None]:
        """Full-size default runs of (dataset, algorithm, seed), trained where missing."""
        wanted = list(dict.fromkeys(wanted))
        missing = [
            Run("default", d, a, self.m.paradigm_of(a), s, FULL)
            for d, a, s in wanted
            if self.find(d, a, s) is None
        ]
        self.train_all(missing, description)
        return {(d, a, s): self.find(d, a, s) for d, a, s in wanted}

    # -- experiments -------------------------------------------------------------------

    def learning_curves(self) -> None:
        runs = [
            Run("curve", d.name, algorithm, self.m.paradigm_of(algorithm), seed, size)
            for d in self.plan.datasets
            for seed in self.plan.seeds
            for size in self.sizes(d)
            for algorithm in d.algorithms
        ]
        self.train_all(runs, "learning curves")

    def hardware(self) -> None:
        """Finds out whether the server trains on a GPU; if so, trains the deep models on
        the CPU too, at full size, so the report can compare the two."""
        cuda = [r for r in self.m.runs if r.ok and r.device == "cuda"]
        if cuda:
            self.m.gpu = {"present": True, "how": "the server trained deep models on cuda"}
        else:
            self.m.gpu = {
                "present": False,
                "how": "every job the server ran with device=auto trained on cpu",
            }
            return
        seed = self.plan.seeds[0]
        runs = [
            Run("hardware", d.name, a, DEEP, seed, FULL, device_requested="cpu")
            for d in self.plan.datasets
            for a in d.algorithms
            if self.m.paradigm_of(a) == DEEP
        ]
        self.train_all(runs, "deep on cpu")

    def tune(self) -> None:
        plan = self.plan.tuning
        if plan is None:
            return
        search_seed, held_out = self.plan.seeds[0], list(self.plan.seeds[1:])
        trials: list[Run] = []
        for algorithm in plan.algorithms:
            entry = self.m.algorithm(algorithm)
            if entry is None:
                self.note(f"tuning: {algorithm} is not in the server's catalog")
                continue
            configs = tuning.sample(entry, plan.trials, seed=plan.seed)
            self.m.tuning.append(
                {
                    "algorithm": algorithm,
                    "paradigm": entry["paradigm"],
                    "dataset": plan.dataset,
                    "search_seed": search_seed,
                    "held_out_seeds": held_out,
                    "box": tuning.describe_box(entry),
                    "space": tuning.space_size(entry),
                    "trials": len(configs),
                    "best_trial": None,
                    "best_params": None,
                }
            )
            trials += [
                Run(
                    "tune",
                    plan.dataset,
                    algorithm,
                    entry["paradigm"],
                    search_seed,
                    FULL,
                    hyperparameters=config,
                    trial=i,
                )
                for i, config in enumerate(configs)
            ]
        self.train_all(trials, "random search")
        wanted = [(plan.dataset, t["algorithm"], s) for t in self.m.tuning for s in self.plan.seeds]
        self.ensure_defaults(wanted, "tuning defaults")
        retrain: list[Run] = []
        for record in self.m.tuning:
            done = [
                r
                for r in trials
                if r.ok and r.algorithm == record["algorithm"] and r.score() is not None
            ]
            if not done:
                continue
            # Best score on the search split; the cheaper trial wins a tie. The defaults are
            # a candidate too: a search that finds nothing better keeps them (gain 0).
            best = max(done, key=lambda r: (r.score() or 0.0, -r.cost.get("dollars", 0.0)))
            default = self.find(plan.dataset, record["algorithm"], search_seed)
            default_score = default.score() if default is not None else None
            if default_score is not None and default_score >= (best.score() or 0.0):
                record["best_trial"], record["best_params"] = DEFAULTS_TRIAL, {}
                continue
            record["best_trial"], record["best_params"] = best.trial, best.hyperparameters
            retrain += [
                Run(
                    "tune",
                    plan.dataset,
                    best.algorithm,
                    best.paradigm,
                    seed,
                    FULL,
                    hyperparameters=best.hyperparameters,
                    trial=best.trial,
                )
                for seed in held_out
            ]
        self.train_all(retrain, "best on held-out seeds")

    def explain(self) -> None:
        plan = self.plan.explain
        if plan is None:
            return
        seed = self.plan.seeds[0]
        models = self.ensure_defaults(
            [(plan.dataset, a, seed) for a in plan.algorithms], "models to explain"
        )
        bar = tqdm(total=len(plan.algorithms), desc="explanations", disable=not self.progress)
        with bar:
            for algorithm in plan.algorithms:
                run = models[(plan.dataset, algorithm, seed)]
                record: dict[str, Any] = {
                    "algorithm": algorithm,
                    "paradigm": self.m.paradigm_of(algorithm),
                    "dataset": plan.dataset,
                }
                if run is None:
                    record["error"] = "no trained model"
                else:
                    record |= self._explain(run, plan.n_repeats, plan.max_rows)
                self.m.explanations.append(record)
                bar.update(1)

    def _explain(self, run: Run, n_repeats: int, max_rows: int) -> dict[str, Any]:
        started = time.monotonic()
        try:
            explanation = self.client.explain(
                run.model_name,
                run.model_version,
                n_repeats=n_repeats,
                max_rows=max_rows,
                seed=0,
            )
        except ParadigmClientError as error:
            return {"error": str(error), "code": error.code.name}
        return {
            "model": run.model_name,
            "version": run.model_version,
            "rows": int(explanation.rows),
            "metric": explanation.metric,
            "baseline_score": explanation.baseline_score,
            "native_kind": explanation.native_kind,
            "seconds": explanation.seconds,
            "client_seconds": time.monotonic() - started,
            "cost": _cost(explanation.cost),
            "features": [
                {
                    "feature": f.feature,
                    "importance_mean": f.importance_mean,
                    "importance_std": f.importance_std,
                    "native": f.native if f.HasField("native") else None,
                }
                for f in explanation.features
            ],
        }

    def serve(self) -> None:
        plan = self.plan.serving
        if plan is None:
            return
        seed = self.plan.seeds[0]
        models = self.ensure_defaults(
            [(plan.dataset, a, seed) for a in plan.algorithms], "models to serve"
        )
        points: list[dict[str, Any]] = []
        served: list[Run] = []
        total = len(plan.algorithms) * len(plan.batches)
        with tqdm(total=total, desc="serving load", disable=not self.progress) as bar:
            for algorithm in plan.algorithms:
                run = models[(plan.dataset, algorithm, seed)]
                if run is None:
                    self.note(f"serving: no {algorithm} model on {plan.dataset} to serve")
                    bar.update(len(plan.batches))
                    continue
                served.append(run)
                points += self._load_points(
                    run, plan.batches, plan.duration_s, plan.warmup_s, bar.update
                )
        self.m.serving["points"] = points
        self.m.serving["settings"] = {
            "concurrency": 1,
            "duration_s": plan.duration_s,
            "warmup_s": plan.warmup_s,
            "batches": list(plan.batches),
        }
        report = self.client.cost_report()
        served_keys = {(r.model_name, r.model_version) for r in served}
        self.m.serving["models"] = [
            {
                "model": c.name,
                "version": c.version,
                "paradigm": _paradigm(c.paradigm),
                "algorithm": c.algorithm,
                "device": c.device,
                "predictions": c.serving.predictions,
                "requests": c.serving.requests,
                "per_1k": _cost(c.serving.per_1k_predictions),
                "total": _cost(c.serving.total),
            }
            for c in report.models
            if (c.name, c.version) in served_keys
        ]
        self.m.serving["paradigms"] = per_paradigm(self.m.serving["models"])

    def _load_points(
        self,
        run: Run,
        batches: Sequence[int],
        duration: float,
        warmup: float,
        advance: Callable[[int], object],
    ) -> list[dict[str, Any]]:
        metadata = self.client.model_metadata(run.model_name, run.model_version)
        spec = metadata.inputs[0]
        dims = tuple(abs(int(d)) for d in spec.shape[1:])
        # One call first: it loads the model and says which device the server runs it on.
        probe = np.random.default_rng(0).random((1, *dims)).astype(dtypes.dtype_of(spec.datatype))
        answer = self.client.infer(run.model_name, {spec.name: probe}, version=run.model_version)
        device = answer.device
        points = []
        for batch in batches:
            shape = (batch, *dims)
            request = make_request(
                run.model_name,
                [InputSpec(spec.name, spec.datatype, shape)],
                version=run.model_version,
            )
            try:
                result = run_load(
                    self.target,
                    run.model_name,
                    request,
                    rows_per_request=batch,
                    concurrency=1,
                    duration_s=duration,
                    warmup_s=warmup,
                )
            except RuntimeError as error:
                self.note(f"serving {run.model_name} at batch {batch} failed: {error}")
                advance(1)
                continue
            points.append(
                {
                    "algorithm": run.algorithm,
                    "paradigm": run.paradigm,
                    "model": run.model_name,
                    "version": run.model_version,
                    "device": device,
                    "batch": batch,
                    "requests": result.requests,
                    "errors": result.error_count,
                    "p50_ms": result.latency_ms["p50"],
                    "p99_ms": result.latency_ms["p99"],
                    "mean_ms": result.latency_ms["mean"],
                    "throughput_rps": result.throughput_rps,
                    "rows_per_s": result.rows_per_s,
                }
            )
            advance(1)
        return points

    def cascades(self) -> None:
        """A cascade per dataset from models already trained (compare/cascades.py)."""
        cascades.measure(
            self.client, self.m, [d.name for d in self.plan.datasets], self.plan.seeds[0],
            self.prefix,
        )  # fmt: skip

    def cleanup(self) -> None:
        """Deletes the models this run published (used when it drove someone's server)."""
        for name in sorted(self.model_names):
            try:
                self.client.delete_model(name)
            except ParadigmClientError as error:
                self.note(f"could not delete {name}: {error}")

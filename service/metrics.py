"""Every Prometheus metric of the service, defined once, on an injected registry.

Nothing is registered globally: the app builds one `Metrics` on the registry it owns, and
tests build their own. Names follow Prometheus conventions (base units, `_total` counters,
histograms rather than summaries, latency buckets reaching down to 50 µs). docs/metrics.md
describes each one and how the cost figures are obtained.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from service.cost.nvml import GpuReading


# 50 µs .. 10 s: CPU inference of a small model at batch 1 takes tens of microseconds.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
TRAINING_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: A warm fork takes milliseconds, a cold interpreter importing torch seconds.
WORKER_START_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
EPOCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

# Every serving series: which paradigm, which model version, which algorithm, which device.
SERVING_LABELS = ("paradigm", "model", "version", "algorithm", "device")
TRAINING_LABELS = ("paradigm", "algorithm", "device")
# Cost series cover both phases: phase="serve" per model version, phase="train" per job's
# model (version empty when the job published nothing).
COST_LABELS = ("phase", "paradigm", "model", "version", "algorithm", "device")
#: What a job could not log to MLflow (service/tracking/runs.py).
MLFLOW_FAILURES = ("run", "data", "artifacts", "end")
#: A cascade version and its two stages, each as "model:version".
CASCADE_LABELS = ("cascade", "version", "first", "then")
#: An alias's shadow pair: the model and alias, and each side as "model:version".
SHADOW_LABELS = ("model", "alias", "primary", "shadow")


class Metrics:
    """The service's metrics; label values: paradigm classical|deep, device cpu|cuda.

    Every gauge names how `--workers N` combines it (prometheus-client's multiprocess
    mode, where /metrics sums the workers' files): in-flight and queue gauges add up over
    the live workers; per-model facts (loaded, size, kind, placement) and configuration
    take the largest value among them. Single-process servers ignore the mode.
    """

    def __init__(self, registry: CollectorRegistry, *, build_version: str = "") -> None:
        self.registry = registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)

        # -- serving ---------------------------------------------------------------------
        self.inference_requests = Counter(
            "paradigm_inference_requests_total",
            "ModelInfer requests that reached a model, by gRPC status code name.",
            (*SERVING_LABELS, "code"),
            registry=registry,
        )
        self.inference_duration = Histogram(
            "paradigm_inference_duration_seconds",
            "ModelInfer latency from the request's arrival at the servicer to its answer.",
            SERVING_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference_queue_wait = Histogram(
            "paradigm_inference_queue_wait_seconds",
            "Time a request waited for an inference thread before its model ran.",
            SERVING_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference_compute = Histogram(
            "paradigm_inference_compute_seconds",
            "Wall time inside the ONNX Runtime session run alone.",
            SERVING_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference_in_flight = Gauge(
            "paradigm_inference_in_flight_requests",
            "ModelInfer requests being served right now.",
            SERVING_LABELS,
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.predictions = Counter(
            "paradigm_predictions_total",
            "Rows predicted (every row of a batch is one prediction).",
            SERVING_LABELS,
            registry=registry,
        )
        self.inference_batch_size = Histogram(
            "paradigm_inference_batch_size",
            "Rows per model run.",
            SERVING_LABELS,
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.unknown_categories = Counter(
            "paradigm_unknown_categories_total",
            "Values of a table model's categorical input never seen in training (each "
            "encodes as all zeros): an early sign that the data has drifted.",
            (*SERVING_LABELS, "column"),
            registry=registry,
        )
        self.models_loaded = Gauge(
            "paradigm_models_loaded",
            "Model versions with a live ONNX Runtime session.",
            ("paradigm", "device"),
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.model_size = Gauge(
            "paradigm_model_size_bytes",
            "Size of a loaded model version's ONNX file.",
            ("paradigm", "model", "version", "algorithm"),
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.model_load_duration = Histogram(
            "paradigm_model_load_duration_seconds",
            "Time to create an ONNX Runtime session for a model version.",
            SERVING_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.model_warmup_duration = Histogram(
            "paradigm_model_warmup_duration_seconds",
            "Time of the one warm-up run at load (zeros, batch 1), which pays CUDA's lazy "
            "set-up before the first request does; no sample when it failed or is disabled.",
            SERVING_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.model_data_kind = Gauge(
            "paradigm_model_data_kind_info",
            "1 per loaded model version: the kind of data it takes (arrays, table, images; "
            "imported for models that came as files). Join on model and version to split "
            "any serving series by data kind without a label on every series.",
            (*SERVING_LABELS, "data_kind"),
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.model_alias = Gauge(
            "paradigm_model_alias_info",
            "1 per alias as this server resolves it now: the version an alias (champion, "
            "...) of a model points at. Join on model and version to follow any serving "
            "series by alias across promotions.",
            ("model", "alias", "version"),
            registry=registry,
        )
        self.model_placement = Gauge(
            "paradigm_model_placement_info",
            "1 per loaded model version: its session's device, and the operator domains "
            "whose nodes run on the CPU provider even on CUDA (ai.onnx.ml for most "
            "scikit-learn exports; empty for none; unknown for older manifests).",
            (*SERVING_LABELS, "cpu_only_domains"),
            multiprocess_mode="livemax",
            registry=registry,
        )

        # -- training --------------------------------------------------------------------
        self.training_jobs = Counter(
            "paradigm_training_jobs_total",
            "Training and import jobs that ended, by final state.",
            ("paradigm", "algorithm", "state"),
            registry=registry,
        )
        self.training_duration = Histogram(
            "paradigm_training_duration_seconds",
            "Wall time of a job's worker process, start to end.",
            TRAINING_LABELS,
            buckets=TRAINING_BUCKETS,
            registry=registry,
        )
        self.worker_start = Histogram(
            "paradigm_worker_start_seconds",
            "From asking for a job's worker process to its first message: what starting it "
            "cost, apart from the job (start: warm = forked from the preloaded server, cold = "
            "a fresh interpreter importing the training libraries).",
            ("kind", "start"),
            buckets=WORKER_START_BUCKETS,
            registry=registry,
        )
        self.training_samples = Counter(
            "paradigm_training_samples_total",
            "Training rows processed: rows x epochs for deep models, rows for classical.",
            TRAINING_LABELS,
            registry=registry,
        )
        self.training_epoch = Histogram(
            "paradigm_training_epoch_seconds",
            "Wall time of one training epoch (deep models).",
            TRAINING_LABELS,
            buckets=EPOCH_BUCKETS,
            registry=registry,
        )
        self.training_queue_depth = Gauge(
            "paradigm_training_queue_depth",
            "Jobs waiting for a worker.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.training_running = Gauge(
            "paradigm_training_running_jobs",
            "Jobs with a live worker process.",
            multiprocess_mode="livesum",
            registry=registry,
        )

        self.mlflow_failures = Counter(
            "paradigm_mlflow_failures_total",
            "What a job could not log to the MLflow tracking server (what: run, data, "
            "artifacts, end); the job itself is unaffected.",
            ("what",),
            registry=registry,
        )
        for what in MLFLOW_FAILURES:  # every series from 0, tracking on or off: dashboards
            self.mlflow_failures.labels(what)  # show zeros, and increase() the first failure

        # -- searches ------------------------------------------------------------------------
        self.search_trials = Counter(
            "paradigm_search_trials_total",
            "Search trials that ended, by search and final state "
            "(succeeded|failed|pruned|cancelled).",
            ("search", "dataset", "state"),
            registry=registry,
        )
        self.search_running_trials = Gauge(
            "paradigm_search_running_trials",
            "Trials of a search whose training job is queued or running.",
            ("search", "dataset"),
            registry=registry,
        )
        self.search_best = Gauge(
            "paradigm_search_best_value",
            "The best held-out value of the optimised metric so far, by search.",
            ("search", "dataset", "metric"),
            registry=registry,
        )
        self.search_spent = Gauge(
            "paradigm_search_spent",
            "What a search has spent of each budget (resource: trials, seconds, dollars, joules).",
            ("search", "dataset", "resource"),
            registry=registry,
        )
        self.search_budget = Gauge(
            "paradigm_search_budget",
            "A search's budget of each resource; 0 means no limit of that kind.",
            ("search", "dataset", "resource"),
            registry=registry,
        )

        # -- shared registry (replicas) --------------------------------------------------
        self.registry_polls = Counter(
            "paradigm_registry_polls_total",
            "Polls of a shared model registry for versions published or deleted by other "
            "replicas, by outcome (ok, failed); only servers on a shared registry poll.",
            ("outcome",),
            registry=registry,
        )
        self.registry_changes = Counter(
            "paradigm_registry_changes_total",
            "Versions published or deleted, and aliases set, moved or removed (event "
            "aliased), by other replicas, as found by polling.",
            ("event",),
            registry=registry,
        )

        # -- cascades (service/serving/cascade.py) ----------------------------------------
        self.cascade_requests = Counter(
            "paradigm_cascade_requests_total",
            "Inference requests answered by a cascade.",
            CASCADE_LABELS,
            registry=registry,
        )
        self.cascade_rows = Counter(
            "paradigm_cascade_rows_total",
            "Rows a cascade answered, by the stage that answered them: first (the first "
            "model was sure enough) or then (escalated to the second model).",
            (*CASCADE_LABELS, "stage"),
            registry=registry,
        )
        self.cascade_cost = Counter(
            "paradigm_cascade_cost_total",
            "What a cascade's requests cost, as the ledger charged its stages' runs; unit "
            "device_seconds, joules or dollars.",
            (*CASCADE_LABELS, "unit"),
            registry=registry,
        )
        self.cascade_then_alone_cost = Counter(
            "paradigm_cascade_then_alone_cost_total",
            "What the same rows would have cost answered by the second model alone, at its "
            "calibrated cost per row; unit device_seconds, joules or dollars.",
            (*CASCADE_LABELS, "unit"),
            registry=registry,
        )
        self.cascade_saved = Counter(
            "paradigm_cascade_saved_total",
            "Cost saved against the second model alone, at both stages' calibrated costs per "
            "row (rows x B - rows x A - escalated rows x B; requests where it would be "
            "negative add nothing); unit device_seconds, joules or dollars.",
            (*CASCADE_LABELS, "unit"),
            registry=registry,
        )
        self.cascade_threshold = Gauge(
            "paradigm_cascade_threshold",
            "A cascade version's calibrated threshold on the first model's top probability.",
            CASCADE_LABELS,
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.cascade_calibrated_escalation = Gauge(
            "paradigm_cascade_calibrated_escalation_ratio",
            "Share of the calibration rows the chosen threshold escalated to the second model.",
            CASCADE_LABELS,
            multiprocess_mode="livemax",
            registry=registry,
        )

        # -- shadows (service/serving/shadow.py) -----------------------------------------
        self.shadow_requests = Counter(
            "paradigm_shadow_requests_total",
            "Requests through a shadowed alias, by outcome: sampled (picked to run through "
            "the shadow), shadowed (the shadow answered), dropped (the shadow queue was "
            "full), failed (the shadow raised an error).",
            (*SHADOW_LABELS, "outcome"),
            registry=registry,
        )
        self.shadow_rows = Counter(
            "paradigm_shadow_rows_total",
            "Rows both the primary and the shadow answered, by agreement: agree (same label, "
            "or values within the tolerance for a regressor) or disagree.",
            (*SHADOW_LABELS, "agreement"),
            registry=registry,
        )
        self.shadow_feedback_rows = Counter(
            "paradigm_shadow_feedback_rows_total",
            "Shadowed rows whose true label came back (SubmitFeedback), by role (primary or "
            "shadow) and whether that role's answer was correct (true or false).",
            (*SHADOW_LABELS, "role", "correct"),
            registry=registry,
        )
        self.shadow_latency = Histogram(
            "paradigm_shadow_latency_seconds",
            "Latency of the shadowed requests, by role: primary (arrival to answer) or shadow "
            "(the shadow's own run through the data plane, queue wait excluded).",
            (*SHADOW_LABELS, "role"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.shadow_cost = Counter(
            "paradigm_shadow_cost_total",
            "What the shadowed requests cost each role, as the ledger charged their runs; unit "
            "device_seconds, joules or dollars. The ledger's serving series charge the shadow's "
            "runs to its own model as usual: this counter is what tells them apart.",
            (*SHADOW_LABELS, "role", "unit"),
            registry=registry,
        )
        self.shadow_charged_rows = Counter(
            "paradigm_shadow_charged_rows_total",
            "Rows behind paradigm_shadow_cost_total, by role (the denominator of a cost per "
            "1 000 rows).",
            (*SHADOW_LABELS, "role"),
            registry=registry,
        )
        self.shadow_queue_depth = Gauge(
            "paradigm_shadow_queue_depth",
            "Shadow runs waiting for a shadow task.",
            multiprocess_mode="livesum",
            registry=registry,
        )

        # -- hardware cost ---------------------------------------------------------------
        self.device_seconds = Counter(
            "paradigm_device_seconds_total",
            "Device time consumed: CPU seconds of model execution and training workers "
            "(not wall time); GPU seconds the device was busy.",
            COST_LABELS,
            registry=registry,
        )
        self.energy = Counter(
            "paradigm_energy_joules_total",
            "Energy attributed to the work, by how it was obtained (nvml, rapl, estimate).",
            (*COST_LABELS, "source"),
            registry=registry,
        )
        self.cost = Counter(
            "paradigm_cost_dollars_total",
            "Money: device seconds times the configured price per device-hour.",
            COST_LABELS,
            registry=registry,
        )
        self.device_price = Gauge(
            "paradigm_device_price_dollars_per_hour",
            "Configured price of one device-hour (a CPU core, or a GPU).",
            ("device",),
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.energy_source = Gauge(
            "paradigm_energy_source_info",
            "How energy is obtained for each device on this host (1 for the source in use).",
            ("device", "source"),
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.build_info = Gauge(
            "paradigm_build_info",
            "Versions of the server and its runtime; always 1.",
            ("version", "python", "onnxruntime"),
            multiprocess_mode="livemax",
            registry=registry,
        )
        import onnxruntime

        self.build_info.labels(
            build_version, platform.python_version(), onnxruntime.__version__
        ).set(1)


class ServingSeries:
    """One model version's serving series, labelled once at load (no lookups per request).

    Creating them at load also makes them exist at zero before the first request, so
    Prometheus' increase() and rate() see all of the traffic.
    """

    def __init__(
        self, metrics: Metrics, labels: tuple[str, str, str, str, str], energy_source: str
    ) -> None:
        self.labels = labels
        self._metrics = metrics
        self._codes = {"OK"}
        self._requests = metrics.inference_requests
        self.ok = metrics.inference_requests.labels(*labels, "OK")
        self.duration = metrics.inference_duration.labels(*labels)
        self.queue_wait = metrics.inference_queue_wait.labels(*labels)
        self.compute = metrics.inference_compute.labels(*labels)
        self.in_flight = metrics.inference_in_flight.labels(*labels)
        self.predictions = metrics.predictions.labels(*labels)
        self.batch_size = metrics.inference_batch_size.labels(*labels)
        cost_labels = ("serve", *labels)
        self.device_seconds = metrics.device_seconds.labels(*cost_labels)
        self.cost = metrics.cost.labels(*cost_labels)
        self.energy_source = energy_source
        self.energy = metrics.energy.labels(*cost_labels, energy_source) if energy_source else None
        self.unknown_categories: dict[str, Any] = {}

    def watch_categories(self, columns: list[str]) -> None:
        """Unknown-category counters for a table model's categorical inputs, at zero."""
        self.unknown_categories = {
            column: self._metrics.unknown_categories.labels(*self.labels, column)
            for column in columns
        }

    def failed(self, code: str) -> None:
        self._codes.add(code)
        self._requests.labels(*self.labels, code).inc()

    def remove(self) -> None:
        """Drops every series of this version once it is deleted: each retrain or import
        would otherwise add ~100 series to /metrics for good (measured 970 -> 3310 over ten
        import-and-retrain cycles). What Prometheus already scraped stays in Prometheus."""
        metrics, labels = self._metrics, self.labels
        for code in self._codes:
            metrics.inference_requests.remove(*labels, code)
        for metric in (
            metrics.inference_duration, metrics.inference_queue_wait, metrics.inference_compute,
            metrics.inference_in_flight, metrics.predictions, metrics.inference_batch_size,
            metrics.model_load_duration, metrics.model_warmup_duration,
        ):  # fmt: skip
            metric.remove(*labels)
        for metric in (metrics.device_seconds, metrics.cost):
            metric.remove("serve", *labels)
        if self.energy_source:
            metrics.energy.remove("serve", *labels, self.energy_source)
        for column in self.unknown_categories:
            metrics.unknown_categories.remove(*labels, column)


class GpuCollector:
    """GPU memory, utilization and power from NVML at scrape time; nothing without NVML."""

    def __init__(self, readings: Callable[[], list[GpuReading]]) -> None:
        self._readings = readings

    def collect(self) -> Iterator[Metric]:
        readings = self._readings()
        if not readings:
            return
        families = {
            "memory_used": GaugeMetricFamily(
                "paradigm_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"]
            ),
            "memory_total": GaugeMetricFamily(
                "paradigm_gpu_memory_total_bytes", "GPU memory in all.", labels=["gpu"]
            ),
            "utilization": GaugeMetricFamily(
                "paradigm_gpu_utilization_ratio",
                "Fraction of the last sample period a kernel ran (NVML).",
                labels=["gpu"],
            ),
            "power": GaugeMetricFamily(
                "paradigm_gpu_power_watts", "GPU power draw (NVML).", labels=["gpu"]
            ),
        }
        for reading in readings:
            gpu = str(reading.index)
            families["memory_used"].add_metric([gpu], reading.memory_used_bytes)
            families["memory_total"].add_metric([gpu], reading.memory_total_bytes)
            families["utilization"].add_metric([gpu], reading.utilization_ratio)
            families["power"].add_metric([gpu], reading.power_watts)
        yield from families.values()


def drop_gauge(gauge: Gauge, *labels: str) -> None:
    """Removes a gauge series. Zeroed first: with `--workers N` the series lives on in the
    worker's shared file after remove(), and /metrics must not go on saying 1."""
    gauge.labels(*labels).set(0)
    gauge.remove(*labels)


class SupervisorMetrics:
    """The `--workers N` supervisor's own series (in the same shared files as the workers')."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.worker_restarts = Counter(
            "paradigm_serving_worker_restarts_total",
            "Serving workers that died and were started again, by slot (0 owns the jobs).",
            ("slot",),
            registry=registry,
        )
        self.workers_ready = Gauge(
            "paradigm_serving_workers_ready",
            "Serving workers ready to answer; health is SERVING only when all of them are.",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.workers_configured = Gauge(
            "paradigm_serving_workers",
            "Serving workers configured (--workers).",
            multiprocess_mode="livemax",
            registry=registry,
        )

"""Every Prometheus metric of the service, defined once, on an injected registry.

Nothing is registered globally: the app builds one `Metrics` on the registry it owns, and
tests build their own. Names follow Prometheus conventions (base units, `_total` counters,
histograms rather than summaries, buckets reaching down to 50 µs).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# 50 µs .. 10 s: CPU inference of a small model at batch 1 takes tens of microseconds.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
TRAINING_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

SERVING_LABELS = ("paradigm", "model", "device")


class Metrics:
    """The service's metrics; label values: paradigm classical|deep, device cpu|cuda."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.inference_requests = Counter(
            "paradigm_inference_requests_total",
            "ModelInfer requests, by outcome (gRPC status code name).",
            (*SERVING_LABELS, "code"),
            registry=registry,
        )
        self.inference_duration = Histogram(
            "paradigm_inference_duration_seconds",
            "Time from a decoded ModelInfer request to its encoded answer.",
            SERVING_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference_compute = Histogram(
            "paradigm_inference_compute_seconds",
            "Time inside the ONNX Runtime session run alone.",
            SERVING_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference_rows = Counter(
            "paradigm_inference_rows_total",
            "Rows (batch entries) predicted.",
            SERVING_LABELS,
            registry=registry,
        )
        self.inference_batch_size = Histogram(
            "paradigm_inference_batch_rows",
            "Rows per ModelInfer request.",
            SERVING_LABELS,
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.models_loaded = Gauge(
            "paradigm_models_loaded",
            "Model versions with a live ONNX Runtime session.",
            ("paradigm", "device"),
            registry=registry,
        )
        self.model_load_duration = Histogram(
            "paradigm_model_load_duration_seconds",
            "Time to create an ONNX Runtime session for a model version.",
            SERVING_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.training_jobs = Counter(
            "paradigm_training_jobs_total",
            "Training and import jobs that ended, by final state.",
            ("paradigm", "algorithm", "state"),
            registry=registry,
        )
        self.training_duration = Histogram(
            "paradigm_training_duration_seconds",
            "Wall time of a job's worker process, start to end.",
            ("paradigm", "algorithm", "device"),
            buckets=TRAINING_BUCKETS,
            registry=registry,
        )
        self.training_queue_depth = Gauge(
            "paradigm_training_queue_depth",
            "Jobs waiting for a worker.",
            registry=registry,
        )
        self.training_running = Gauge(
            "paradigm_training_running_jobs",
            "Jobs with a live worker process.",
            registry=registry,
        )

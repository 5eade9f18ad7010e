"""Typed settings: defaults here, overridden by PARADIGM_* environment variables and flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Device = Literal["auto", "cpu", "cuda"]


class Settings(BaseSettings):
    """Everything the server can be told; `paradigm-server --help` shows the flags."""

    model_config = SettingsConfigDict(env_prefix="PARADIGM_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8001, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int = Field(
        8002, ge=-1, le=65535, description="Prometheus port; 0 picks a free one, -1 disables"
    )
    http_port: int = Field(
        -1,
        ge=-1,
        le=65535,
        description="OIP v2 REST port (8000 is Triton's); 0 picks a free one, -1 disables",
    )
    data_dir: Path = Path("./var")
    port_file: Path | None = Field(None, description="write the bound gRPC port here")
    http_port_file: Path | None = Field(None, description="write the bound REST port here")

    device: Device = Field("auto", description="serving device for ONNX Runtime")
    # Per-model serving device, e.g. PARADIGM_DEVICE_MODELS='{"iris-lr": "cpu"}': models
    # whose operators CUDA lacks (ai.onnx.ml) gain nothing from a GPU session.
    device_models: dict[str, Device] = Field(default_factory=dict)
    gpu_mem_limit_bytes: int = Field(
        0, ge=0, description="ONNX Runtime CUDA arena limit per session; 0 = no limit"
    )
    gpu_arena_extend_strategy: Literal["kNextPowerOfTwo", "kSameAsRequested"] = Field(
        "kSameAsRequested", description="how the CUDA arena grows (ORT's arena_extend_strategy)"
    )
    warmup: bool = Field(
        True, description="run each model once at load, so its first request pays no set-up"
    )
    io_binding: bool = Field(
        True, description="CUDA sessions bind inputs and outputs (no needless copies)"
    )
    inference_threads: int = Field(
        0, ge=0, description="threads running ONNX Runtime sessions; 0 means the CPU count"
    )
    intra_op_threads: int = Field(1, ge=0, description="ONNX Runtime threads per session call")
    inline_run_us: int = Field(
        50,
        ge=0,
        description="a CPU model whose batch-1 run measured at load takes at most this many "
        "microseconds runs on the event loop, saving the hand-off to a thread; 0 = never",
    )
    graph_optimization: Literal["none", "basic", "extended", "all"] = "all"
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_batch_size: int = Field(4096, ge=1, description="largest batch a request may carry")

    # Dynamic batching (service/serving/batcher.py); per-model overrides in batching_models,
    # e.g. PARADIGM_BATCHING_MODELS='{"digits-cnn": {"max_batch_size": 256}}'.
    batching: bool = Field(True, description="batch concurrent requests of a model")
    batch_max_size: int = Field(64, ge=1, description="most rows in one batch")
    batch_max_queue_delay_us: int = Field(
        0, ge=0, description="extra wait for a fuller batch; 0 = batch only what queued"
    )
    batch_max_queue_size: int = Field(1024, ge=1, description="queued requests per model")
    batching_models: dict[str, dict[str, int | bool]] = Field(default_factory=dict)
    # Shadows of aliases (service/serving/shadow.py): off the request's path, bounded.
    shadow_queue_size: int = Field(
        256, ge=1, description="shadow runs waiting per process; past it new ones are dropped"
    )
    shadow_tasks: int = Field(1, ge=1, le=64, description="shadow runs at once per process")
    shadow_busy_in_flight: int = Field(
        0,
        ge=0,
        description="shadow runs wait while more requests than this through shadowed aliases "
        "are in progress in the process: the shadow uses what the primaries leave idle",
    )
    shadow_max_share: float = Field(
        0.1,
        gt=0,
        le=1,
        description="most of its time a shadow task spends running shadows (a CPU budget); "
        "past it shadow runs queue, then drop",
    )
    shadow_idle_lag_us: int = Field(
        100,
        ge=0,
        description="shadow runs wait while a yield to the event loop takes longer than this "
        "(requests are waiting in the loop)",
    )
    shadow_feedback_window: int = Field(
        10000, ge=0, description="shadowed requests kept per process for SubmitFeedback"
    )
    shadow_tolerance: float = Field(
        1e-4, ge=0, description="a regressor's two answers agree within this (abs and relative)"
    )
    # One GPU run of 1 row costs about what a run of hundreds does (launches, copies), so a
    # model on a CUDA session may gather bigger batches; a per-model override still wins.
    gpu_batch_max_size: int = Field(512, ge=1, description="most rows in one batch on CUDA")
    gpu_batch_max_queue_delay_us: int = Field(
        0, ge=0, description="extra wait for a fuller batch on CUDA; 0 = only what queued"
    )

    max_concurrent_jobs: int = Field(1, ge=1, description="training workers at once")
    max_queued_jobs: int = Field(64, ge=1)
    worker_blas_threads: int = Field(
        1, ge=1, description="BLAS/torch threads per worker (oversubscription measured 11-16x)"
    )
    warm_workers: bool = Field(
        True,
        description="jobs fork from a process that has imported the training libraries "
        "(multiprocessing's forkserver) instead of importing them each: ~3 s less per job",
    )
    max_queued_explains: int = Field(
        4, ge=0, description="Explain calls waiting for the one explain worker; more are refused"
    )
    parity_tolerance: float = Field(1e-3, gt=0)
    cancel_grace_seconds: float = Field(2.0, ge=0)
    max_upload_bytes: int = Field(256 * 1024 * 1024, ge=1)

    # Prices and power: illustrative defaults (see docs/metrics.md); set your own.
    cpu_price_per_core_hour: float = Field(
        0.045, ge=0, description="dollars per CPU core-hour (about one on-demand cloud vCPU)"
    )
    gpu_price_per_hour: float = Field(
        4.0, ge=0, description="dollars per GPU-hour (about an on-demand H100)"
    )
    cpu_watts_per_core: float = Field(
        10.0, ge=0, description="estimated watts per busy core, used where RAPL is unreadable"
    )
    use_rapl: bool = Field(True, description="measure CPU energy with RAPL where readable")
    energy_sample_seconds: float = Field(1.0, gt=0, description="RAPL and NVML sample period")

    # Limits: one caller must not be able to exhaust the machine (docs/operations.md).
    max_concurrent_rpcs: int = Field(
        1024, ge=1, description="RPCs in progress at once; more get RESOURCE_EXHAUSTED at once"
    )
    max_model_bytes: int = Field(
        512 * 1024 * 1024, ge=1024, description="largest model file accepted by ImportModel"
    )
    skops_trusted_prefixes: list[str] = Field(
        default_factory=lambda: ["sklearn.", "numpy.", "scipy."],
        description="type names an ImportModel caller may list in trusted_types",
    )
    max_job_seconds: float = Field(
        6 * 3600.0, gt=0, description="a training or import worker running longer is killed"
    )

    # Access (docs/operations.md). Tokens: lines "<scope> <token>" in auth_tokens_file, or
    # "scope:token,scope:token" in PARADIGM_AUTH_TOKENS; scopes are "predict" and "admin".
    # No tokens at all means no authentication.
    auth_tokens_file: Path | None = Field(None, description="bearer tokens, one per line")
    auth_tokens: str = Field("", description="bearer tokens as scope:token,scope:token")
    tls_cert_file: Path | None = Field(None, description="server certificate (PEM): enables TLS")
    tls_key_file: Path | None = Field(None, description="server private key (PEM)")
    tls_client_ca_file: Path | None = Field(
        None, description="CA (PEM) that client certificates must chain to: mutual TLS"
    )

    # The model registry (docs/deploy.md). Defaults: SQLite and a directory in data_dir.
    # Replicas share one registry by pointing registry_url at PostgreSQL and artifacts_url
    # at a shared directory or an S3-compatible bucket; each polls for new versions.
    registry_url: str = Field(
        "",
        description="model metadata store: empty for SQLite in data_dir, or "
        "postgresql://user:password@host:port/database",
    )
    artifacts_url: str = Field(
        "",
        description="model files: empty for data_dir/models, a directory path, "
        "or s3://bucket/prefix",
    )
    s3_endpoint_url: str = Field(
        "", description="S3-compatible endpoint (MinIO, Ceph, ...); empty for AWS"
    )
    registry_poll_seconds: float = Field(
        2.0, gt=0, description="how often a replica looks for versions published elsewhere"
    )

    # MLflow tracking (service/tracking/): every training job becomes a run there.
    mlflow_tracking_uri: str = Field(
        "",
        description="MLflow tracking server, http(s)://host:port; empty = no tracking. "
        "Artifacts need the server's artifact proxy (mlflow server --serve-artifacts)",
    )
    mlflow_experiment: str = Field(
        "paradigm", description="MLflow experiment the runs go to (created if missing)"
    )
    mlflow_timeout_seconds: float = Field(
        5.0, gt=0, description="limit on each call to the tracking server"
    )

    # Distributed deep training (torch.distributed through torchrun).
    max_world_size: int = Field(
        4, ge=1, description="most DDP processes one training job may ask for"
    )
    distributed_backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="DDP backend; auto is NCCL on CUDA and gloo on CPU"
    )

    # Serving processes (service/supervisor.py). One by default: on a GPU each process would
    # hold its own CUDA context and copy of every model (docs/operations.md).
    workers: int | Literal["auto"] = Field(
        1, description="serving processes sharing the gRPC port; auto = the cores available"
    )
    grace_seconds: float = Field(5.0, ge=0, description="shutdown grace for in-flight RPCs")
    log_level: str = "INFO"

    @field_validator("workers")
    @classmethod
    def _at_least_one_worker(cls, workers: int | str) -> int | str:
        if isinstance(workers, int) and workers < 1:
            raise ValueError("workers must be at least 1, or auto")
        return workers

    def resolved_workers(self) -> int:
        """Serving processes to run: `auto` is the cores this process may use."""
        if self.workers == "auto":
            return len(os.sched_getaffinity(0))
        return self.workers

    def resolved_inference_threads(self) -> int:
        return self.inference_threads or (os.cpu_count() or 1)

"""The composition root: builds every part from Settings and owns start/stop order.

app = build_app(settings); await app.start(); ... app.port ...; await app.stop()
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from service import __version__, launcher
from service.api.auth import AuthInterceptor, load_tokens, server_credentials
from service.api.cost import CostServicer
from service.api.errors import ErrorInterceptor
from service.api.inference import InferenceServicer
from service.api.paradigm import (
    AlgorithmServicer,
    DatasetServicer,
    ModelServicer,
    TrainingServicer,
)
from service.api.search import SearchServicer
from service.cost.energy import CpuEnergyMeter
from service.cost.ledger import CostLedger, GpuEnergyMeter
from service.cost.nvml import Nvml
from service.datasets.layout import BUILTIN_DATASETS, INFO_FILE
from service.datasets.store import DatasetStore
from service.errors import FailedPrecondition
from service.gen.inference import grpc_predict_v2_pb2 as inference_pb
from service.gen.inference import grpc_predict_v2_pb2_grpc as inference_grpc
from service.gen.paradigm.v1 import paradigm_pb2 as paradigm_pb
from service.gen.paradigm.v1 import paradigm_pb2_grpc as paradigm_grpc
from service.gen.paradigm.v1 import search_pb2 as search_pb
from service.gen.paradigm.v1 import search_pb2_grpc as search_grpc
from service.metrics import GpuCollector, Metrics
from service.registry.store import ModelRegistry, open_registry
from service.serving.batcher import BatchingConfig
from service.serving.dataplane import DataPlane
from service.serving.index import ModelIndex
from service.serving.loaded import LoadedModels
from service.serving.probe import probe_serving
from service.settings import Settings
from service.training.explain import Explainer
from service.training.jobs import JobManager
from service.training.search import SearchManager
from service.training.validation import require_training_libraries

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    inference_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    *(service.full_name for service in paradigm_pb.DESCRIPTOR.services_by_name.values()),
    *(service.full_name for service in search_pb.DESCRIPTOR.services_by_name.values()),
)


class App:
    """A running Paradigm server: gRPC, metrics endpoint, registry and job workers."""

    def __init__(self, settings: Settings, metrics_registry: CollectorRegistry | None = None):
        self.settings = settings
        self.metrics_registry = metrics_registry or CollectorRegistry()
        self.metrics = Metrics(self.metrics_registry, build_version=__version__)
        self._nvml = Nvml.open()
        if self._nvml is not None:
            self.metrics_registry.register(GpuCollector(self._nvml.readings))
        self._cpu_meter = CpuEnergyMeter(
            settings.cpu_watts_per_core,
            interval=settings.energy_sample_seconds,
            use_rapl=settings.use_rapl,
        )
        gpu_meter = (
            GpuEnergyMeter(self._nvml) if self._nvml is not None and self._nvml.count else None
        )
        self.ledger = CostLedger(
            self.metrics,
            cpu_meter=self._cpu_meter,
            cpu_price_per_core_hour=settings.cpu_price_per_core_hour,
            gpu_price_per_hour=settings.gpu_price_per_hour,
            gpu_meter=gpu_meter,
        )
        self._samplers_stop = threading.Event()
        self.port = 0
        self.metrics_port = 0
        self._ready = False
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._http: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._registry: ModelRegistry | None = None
        self._jobs: JobManager | None = None
        self._searches: SearchManager | None = None
        self._explainer: Explainer | None = None
        #: The data plane once started (serving probes run through it).
        self.dataplane: DataPlane | None = None
        self._preload: asyncio.Task[None] | None = None
        self._poll: asyncio.Task[None] | None = None
        self._warm: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        """Starts everything; on failure, stops what did start and raises."""
        try:
            await self._start()
        except BaseException:
            await self.stop(grace=0)
            raise

    async def _start(self) -> None:
        settings = self.settings
        # Bad tokens or TLS files stop the start before anything is written or spawned.
        tokens = load_tokens(settings.auth_tokens_file, settings.auth_tokens)
        credentials = server_credentials(
            settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
        )
        data_dir = settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        datasets_dir = data_dir / "datasets"
        await _materialize_builtin(datasets_dir)

        registry = self._registry = open_registry(settings, data_dir)
        datasets = DatasetStore(datasets_dir, settings.max_upload_bytes)
        self._executor = ThreadPoolExecutor(
            settings.resolved_inference_threads(), thread_name_prefix="inference"
        )
        # Before LoadedModels: the index hears of a change before the models are told to load it.
        index = ModelIndex(registry)
        models = LoadedModels(
            registry,
            index,
            self.metrics,
            self._executor,
            device=settings.device,
            intra_op_threads=settings.intra_op_threads,
            energy_source=self.ledger.energy_source,
            graph_optimization=settings.graph_optimization,
            execution_mode=settings.execution_mode,
            device_models=settings.device_models,
            gpu_mem_limit_bytes=settings.gpu_mem_limit_bytes,
            gpu_arena_extend_strategy=settings.gpu_arena_extend_strategy,
            warmup=settings.warmup,
            io_binding=settings.io_binding,
        )
        dataplane = self.dataplane = DataPlane(
            models,
            index,
            self.ledger,
            self._executor,
            max_batch_size=settings.max_batch_size,
            batching=batching_config(settings),
            batching_models={
                name: batching_config(settings, overrides)
                for name, overrides in settings.batching_models.items()
            },
            run_slots=settings.resolved_inference_threads(),
            gpu_batching=gpu_batching_config(settings),
        )
        jobs = self._jobs = JobManager(settings, registry, datasets, self.metrics, self.ledger)
        explainer = self._explainer = Explainer(settings, registry, datasets, self.ledger)
        self._start_samplers()
        await jobs.start()
        searches = self._searches = SearchManager(
            settings, jobs, datasets, registry, self.metrics,
            measure_serving=lambda name, version: _served(dataplane, name, version),
        )  # fmt: skip
        await searches.start()
        self._start_warm_workers()

        if tokens:
            log.info("bearer-token authentication on (%d tokens)", len(tokens))
            if credentials is None and settings.host not in ("127.0.0.1", "localhost", "::1"):
                log.warning("tokens travel in clear text: set tls_cert_file and tls_key_file")
        # Auth runs first, so refused calls never reach a servicer; with no tokens it is not
        # installed at all and ModelInfer pays nothing for it.
        auth = [AuthInterceptor(tokens)] if tokens else []
        server = self._server = grpc.aio.server(
            interceptors=[*auth, ErrorInterceptor()],
            # Past this many RPCs in progress gRPC answers RESOURCE_EXHAUSTED at once instead
            # of queueing without bound.
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                # gRPC shares a port with any other process by default (SO_REUSEPORT),
                # splitting connections between them: a taken port must fail instead.
                ("grpc.so_reuseport", 0),
            ],
        )
        inference_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(
                dataplane, ready=lambda: self._ready,
                max_batch_size=settings.max_batch_size,
            ),
            server,
        )  # fmt: skip
        paradigm_grpc.add_DatasetServiceServicer_to_server(DatasetServicer(datasets), server)
        paradigm_grpc.add_AlgorithmServiceServicer_to_server(AlgorithmServicer(), server)
        paradigm_grpc.add_TrainingServiceServicer_to_server(TrainingServicer(jobs), server)
        search_grpc.add_SearchServiceServicer_to_server(SearchServicer(searches), server)
        paradigm_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(
                registry, jobs, explainer, data_dir / "uploads", settings.max_model_bytes
            ),
            server,
        )
        paradigm_grpc.add_CostServiceServicer_to_server(
            CostServicer(
                self.ledger,
                registry,
                datetime.now(UTC),
                {"cpu": settings.cpu_price_per_core_hour, "cuda": settings.gpu_price_per_hour},
            ),
            server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            server,
        )  # fmt: skip
        address = f"{settings.host}:{settings.port}"
        self.port = (
            server.add_insecure_port(address)
            if credentials is None
            else server.add_secure_port(address, credentials)
        )
        await server.start()
        if settings.metrics_port >= 0:
            self._http, _ = start_http_server(
                settings.metrics_port, addr=settings.host, registry=self.metrics_registry
            )
            self.metrics_port = self._http.server_port
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._ready = True
        # Latest versions load in the background: readiness does not wait for every model.
        self._preload = asyncio.create_task(models.preload(index.latest()))
        if registry.shared:
            self._poll = asyncio.create_task(
                _poll_registry(registry, settings.registry_poll_seconds, self.metrics)
            )
        if settings.port_file:
            _write_atomically(settings.port_file, str(self.port))
        log.info(
            "serving gRPC on %s:%d, metrics on %d, data in %s",
            settings.host, self.port, self.metrics_port, data_dir,
        )  # fmt: skip

    def _start_samplers(self) -> None:
        self._cpu_meter.start()
        gpu_meter = self.ledger.gpu_meter
        if gpu_meter is None:
            return
        period = self.settings.energy_sample_seconds

        def sample_gpu() -> None:
            while not self._samplers_stop.wait(period):
                gpu_meter.sample()

        threading.Thread(target=sample_gpu, name="nvml-sampler", daemon=True).start()

    def _start_warm_workers(self) -> None:
        """Starts the preloaded fork server in a thread; jobs spawn as before until it is
        ready (its imports take seconds, and start-up must not wait for them)."""
        if not self.settings.warm_workers or launcher.warm():
            return
        try:
            require_training_libraries("classical")
        except FailedPrecondition:
            return  # a serve-only install trains nothing

        def started(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.warning("warm workers unavailable, jobs spawn: %s", task.exception())

        self._warm = asyncio.create_task(asyncio.to_thread(launcher.start_warm_workers))
        self._warm.add_done_callback(started)

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING first, then stop jobs, then let in-flight RPCs finish."""
        grace = self.settings.grace_seconds if grace is None else grace
        self._ready = False
        await self._health.enter_graceful_shutdown()
        if self._preload is not None:
            self._preload.cancel()
        if self._poll is not None:
            self._poll.cancel()
            # Waited for, so no poll is mid-query when the metadata store closes below.
            await asyncio.gather(self._poll, return_exceptions=True)
        if self._searches is not None:  # before the jobs: its trials are jobs
            await self._searches.stop()
        if self._jobs is not None:
            await self._jobs.stop()
        if self._explainer is not None:
            await self._explainer.stop()
        if self._server is not None:
            await self._server.stop(grace)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._registry is not None:
            self._registry.close()
        self._samplers_stop.set()
        self._cpu_meter.stop()
        if self._nvml is not None:
            self._nvml.close()
        log.info("stopped")


async def _served(dataplane: DataPlane, name: str, version: str) -> dict[str, Any]:
    """A search's winner served through the data plane: its latency and serving bill."""
    return (await probe_serving(dataplane, name, version)).to_dict()


def build_app(settings: Settings, metrics_registry: CollectorRegistry | None = None) -> App:
    return App(settings, metrics_registry)


def batching_config(
    settings: Settings, overrides: dict[str, int | bool] | None = None
) -> BatchingConfig:
    """The default batching config, or a model's with its overrides applied."""
    values: dict[str, int | bool] = {
        "enabled": settings.batching,
        "max_batch_size": settings.batch_max_size,
        "max_queue_delay_us": settings.batch_max_queue_delay_us,
        "max_queue_size": settings.batch_max_queue_size,
    }
    unknown = set(overrides or {}) - set(values)
    if unknown:
        raise ValueError(f"unknown batching keys {sorted(unknown)}; use {sorted(values)}")
    values.update(overrides or {})
    return BatchingConfig(
        enabled=bool(values["enabled"]),
        max_batch_size=int(values["max_batch_size"]),
        max_queue_delay_us=int(values["max_queue_delay_us"]),
        max_queue_size=int(values["max_queue_size"]),
    )


def gpu_batching_config(settings: Settings) -> BatchingConfig:
    """The batching of models whose session runs on CUDA (no per-model override)."""
    return batching_config(
        settings,
        {
            "max_batch_size": settings.gpu_batch_max_size,
            "max_queue_delay_us": settings.gpu_batch_max_queue_delay_us,
        },
    )


async def _materialize_builtin(datasets_dir: Path) -> None:
    """Writes missing built-in datasets in a worker: scikit-learn stays out of this process."""
    missing = [n for n in BUILTIN_DATASETS if not (datasets_dir / n / INFO_FILE).exists()]
    if not missing:
        return
    log.info("writing built-in datasets %s", missing)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            await asyncio.get_running_loop().run_in_executor(
                pool, launcher.run_by_name, launcher.MATERIALIZE_BUILTIN, datasets_dir
            )
        except ImportError as exc:
            # A serve-only install (deploy/docker's `serve` target) has no scikit-learn:
            # it serves what the registry holds and leaves datasets to the trainer.
            log.warning("built-in datasets not written (%s): this install cannot train", exc)


#: At most one warning a minute while the shared registry cannot be polled.
POLL_WARNING_SECONDS = 60.0


async def _poll_registry(registry: ModelRegistry, period: float, metrics: Metrics) -> None:
    """Picks up versions other replicas published or deleted, every `period` seconds.

    The query runs in a thread (the metadata store is a blocking client); listeners are
    told on the loop, where LoadedModels schedules its loads. A failed poll is logged and
    retried: a database restart must not take the serving of loaded models down with it.
    """
    warned_at = -POLL_WARNING_SECONDS
    failing = False
    while True:
        await asyncio.sleep(period)
        try:
            changes = await asyncio.to_thread(registry.refresh)
        except Exception as exc:
            metrics.registry_polls.labels("failed").inc()
            now = time.monotonic()
            if now - warned_at >= POLL_WARNING_SECONDS:
                log.warning("cannot poll the model registry (retrying every %.1f s): %s",
                            period, exc)  # fmt: skip
                warned_at = now
            failing = True
            continue
        metrics.registry_polls.labels("ok").inc()
        if failing:
            log.info("polling the model registry again")
            failing = False
        for change in changes:
            metrics.registry_changes.labels(change.event).inc(len(change.versions))
        registry.announce(changes)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)

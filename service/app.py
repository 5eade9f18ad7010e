"""The composition root: builds every part from Settings and owns start/stop order.

app = build_app(settings); await app.start(); ... app.port ...; await app.stop()
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterable, MutableSequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric

from service import __version__, launcher, tracing
from service.api.auth import AuthInterceptor, load_tokens, server_credentials
from service.api.cascade import CascadeAliasing, CascadeServicer
from service.api.cost import CostServicer
from service.api.errors import ErrorInterceptor
from service.api.forward import OwnerForwarder
from service.api.inference import InferenceServicer
from service.api.paradigm import (
    AlgorithmServicer,
    DatasetServicer,
    TrainingServicer,
)
from service.api.rest.server import RestServer, start_rest
from service.api.search import SearchServicer
from service.api.shadow import ShadowServicer
from service.api.traced import TracingInterceptor
from service.cost.energy import CpuEnergyMeter
from service.cost.ledger import CostLedger, GpuEnergyMeter
from service.cost.multiprocess import serving_totals as shared_serving_totals
from service.cost.nvml import Nvml
from service.datasets.layout import BUILTIN_DATASETS, INFO_FILE
from service.datasets.store import DatasetStore
from service.errors import FailedPrecondition, ParadigmError
from service.gen.inference import grpc_predict_v2_pb2 as inference_pb
from service.gen.inference import grpc_predict_v2_pb2_grpc as inference_grpc
from service.gen.paradigm.v1 import paradigm_pb2 as paradigm_pb
from service.gen.paradigm.v1 import paradigm_pb2_grpc as paradigm_grpc
from service.gen.paradigm.v1 import search_pb2 as search_pb
from service.gen.paradigm.v1 import search_pb2_grpc as search_grpc
from service.metrics import GpuCollector, Metrics
from service.registry.cascades import CascadeStore
from service.registry.store import ModelRegistry, open_registry
from service.role import ServingRole
from service.serving.batcher import BatchingConfig
from service.serving.cascade import CascadePlane
from service.serving.dataplane import DataPlane
from service.serving.index import ModelIndex
from service.serving.loaded import LoadedModels
from service.serving.probe import probe_serving
from service.serving.promotion import Gates, Promoter
from service.serving.shadow import ShadowRunner
from service.settings import Settings
from service.training.explain import Explainer
from service.training.jobs import JobManager
from service.training.search import SearchManager
from service.training.validation import require_training_libraries

log = logging.getLogger(__name__)

#: Services answered by the process that owns jobs; other workers forward them to it.
CONTROL_SERVICES = (
    *paradigm_pb.DESCRIPTOR.services_by_name.values(),
    *search_pb.DESCRIPTOR.services_by_name.values(),
)
#: How often a worker of `--workers N` looks at its peers' readiness for its health status.
PEER_CHECK_SECONDS = 0.2

SERVICE_NAMES = (
    inference_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    *(service.full_name for service in paradigm_pb.DESCRIPTOR.services_by_name.values()),
    *(service.full_name for service in search_pb.DESCRIPTOR.services_by_name.values()),
)


class App:
    """A running Paradigm server: gRPC, metrics endpoint, registry and job workers."""

    def __init__(
        self,
        settings: Settings,
        metrics_registry: CollectorRegistry | None = None,
        role: ServingRole | None = None,
    ):
        self.settings = settings
        #: None for a server that is one process; else its slot among `--workers N`.
        self.role = role
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
        self.http_port = 0
        self._rest: RestServer | None = None
        self._shadows: ShadowRunner | None = None
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
        self._peers: asyncio.Task[None] | None = None
        self._forwarder: OwnerForwarder | None = None

    @property
    def ready(self) -> bool:
        """Ready to serve: this process, and every other worker of `--workers N`."""
        return self._ready and (self.role is None or self.role.all_ready())

    @property
    def owns_jobs(self) -> bool:
        return self.role is None or self.role.owner

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
        tracing.configure()  # OTEL_* variables; off unless they ask for traces
        datasets_dir = data_dir / "datasets"
        if self.owns_jobs:
            await _materialize_builtin(datasets_dir)

        registry = self._registry = open_registry(settings, data_dir, follower=not self.owns_jobs)
        if self.role is not None:
            shared_metrics = Path(self.role.metrics_dir)
            self.ledger.totals_source = lambda: shared_serving_totals(shared_metrics)
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
            measure_runs_below_s=settings.inline_run_us / 1e6,
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
            inline_run_s=settings.inline_run_us / 1e6,
        )
        # Every serving process serves cascades, from the table beside the registry.
        cascade_store = await asyncio.to_thread(CascadeStore, data_dir)
        cascades = CascadePlane(dataplane, cascade_store, self.metrics, data_dir)
        if self.role is not None:
            cascades.follow(self.role.registry_generation, owner=self.role.owner)
        # Every serving process shadows its own traffic (aliases' shadows are registry data).
        shadows = self._shadows = ShadowRunner(
            registry.shadow_of,
            self.metrics,
            queue_size=settings.shadow_queue_size,
            tasks=settings.shadow_tasks,
            feedback_window=settings.shadow_feedback_window,
            tolerance=settings.shadow_tolerance,
            busy_in_flight=settings.shadow_busy_in_flight,
            idle_lag=settings.shadow_idle_lag_us / 1e6,
            max_share=settings.shadow_max_share,
        )
        shadows.start(dataplane.infer)
        cascades.shadows = shadows
        self._start_samplers()

        if tokens:
            log.info("bearer-token authentication on (%d tokens)", len(tokens))
            if credentials is None and settings.host not in ("127.0.0.1", "localhost", "::1"):
                log.warning("tokens travel in clear text: set tls_cert_file and tls_key_file")
        # Auth runs first, so refused calls never reach a servicer; with no tokens it is not
        # installed at all and ModelInfer pays nothing for it.
        auth = [AuthInterceptor(tokens)] if tokens else []
        # Innermost, and only when traces are on: off, no call pays for it.
        traced = [TracingInterceptor()] if tracing.ENABLED else []
        server = self._server = grpc.aio.server(
            interceptors=[*auth, ErrorInterceptor(), *traced],
            # Past this many RPCs in progress gRPC answers RESOURCE_EXHAUSTED at once instead
            # of queueing without bound.
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                # gRPC shares a port with any other process by default (SO_REUSEPORT),
                # splitting connections between them: a taken port must fail instead. The
                # workers of `--workers N` share it on purpose; their supervisor checked
                # that no other program holds it.
                ("grpc.so_reuseport", 1 if self.role is not None else 0),
            ],
        )
        inference_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(
                cascades, ready=lambda: self.ready,
                max_batch_size=settings.max_batch_size,
            ),
            server,
        )  # fmt: skip
        if self.owns_jobs:
            await self._add_control_plane(server, registry, data_dir, cascade_store, cascades)
            paradigm_grpc.add_ShadowServiceServicer_to_server(
                ShadowServicer(registry, shadows, self._metric_families), server
            )
        else:
            assert self.role is not None
            self._forwarder = OwnerForwarder(self.role.owner_address, settings.max_message_bytes)
            server.add_generic_rpc_handlers(self._forwarder.handlers(CONTROL_SERVICES))
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
        if self.role is not None and self.role.owner:
            # Where the other workers forward control-plane calls: a socket in the
            # supervisor's private run directory, not reachable from the network.
            server.add_insecure_port(self.role.owner_address)
        await server.start()
        if settings.http_port >= 0:  # OIP v2 over REST: same loop, same data plane
            self._rest = await start_rest(
                settings, cascades, tokens, ready=lambda: self.ready,
                reuse_port=self.role is not None,
            )  # fmt: skip
            self.http_port = self._rest.port
        if settings.metrics_port >= 0:
            self._http, _ = start_http_server(
                settings.metrics_port, addr=settings.host, registry=self.metrics_registry
            )
            self.metrics_port = self._http.server_port
        self._ready = True
        if self.role is None:
            await self._set_health(serving=True)
        else:
            self.role.ready_flags[self.role.slot] = 1
            self._peers = asyncio.create_task(self._follow_peers())
        # Latest and aliased versions load in the background: readiness does not wait.
        self._preload = asyncio.create_task(models.preload(index.served()))
        if self.role is not None and self.role.owner:
            registry.on_change(self.role.registry_changed)
            registry.on_alias_change(self.role.registry_changed)
        if registry.shared:
            poller = RegistryPoller(registry, self.metrics)
            self._poll = asyncio.create_task(poller.run(settings.registry_poll_seconds))
            models.refresh_on_miss = poller.poll_on_miss
            if self.role is not None:
                models.registry_moved = poller.moved_since(self.role.registry_generation)
                models.catch_up = poller.poll
                shadows.registry_moved = poller.moved_since(self.role.registry_generation)
                shadows.catch_up = poller.poll
        if settings.port_file:
            _write_atomically(settings.port_file, str(self.port))
        if settings.http_port_file and self._rest is not None:
            _write_atomically(settings.http_port_file, str(self.http_port))
        log.info(
            "serving gRPC on %s:%d, REST on %s, metrics on %d, data in %s",
            settings.host, self.port, self.http_port if self._rest else "off",
            self.metrics_port, data_dir,
        )  # fmt: skip

    async def _add_control_plane(
        self,
        server: grpc.aio.Server,
        registry: ModelRegistry,
        data_dir: Path,
        cascade_store: CascadeStore,
        cascades: CascadePlane,
    ) -> None:
        """Datasets, training, models and cost: served by the one process that owns jobs."""
        settings = self.settings
        registry.guard_deletes(cascade_store.refuse_deleting_stages)
        datasets = DatasetStore(data_dir / "datasets", settings.max_upload_bytes)
        jobs = self._jobs = JobManager(settings, registry, datasets, self.metrics, self.ledger)
        explainer = self._explainer = Explainer(settings, registry, datasets, self.ledger)
        await jobs.start()
        dataplane = self._require_dataplane()
        promoter = Promoter(registry, dataplane, explainer.compare)
        searches = self._searches = SearchManager(
            settings, jobs, datasets, registry, self.metrics,
            measure_serving=lambda name, version: _served(dataplane, name, version),
            promote=functools.partial(_promote, promoter),
        )  # fmt: skip
        await searches.start()
        self._start_warm_workers()
        paradigm_grpc.add_DatasetServiceServicer_to_server(DatasetServicer(datasets), server)
        paradigm_grpc.add_AlgorithmServiceServicer_to_server(AlgorithmServicer(), server)
        paradigm_grpc.add_TrainingServiceServicer_to_server(TrainingServicer(jobs), server)
        search_grpc.add_SearchServiceServicer_to_server(SearchServicer(searches), server)
        paradigm_grpc.add_ModelServiceServicer_to_server(
            CascadeAliasing(
                registry,
                jobs,
                explainer,
                data_dir / "uploads",
                settings.max_model_bytes,
                promoter,
                cascades=cascade_store,
                plane=cascades,
            ),
            server,
        )
        paradigm_grpc.add_CascadeServiceServicer_to_server(
            CascadeServicer(
                registry, datasets, cascade_store, cascades,
                blas_threads=settings.worker_blas_threads,
            ),
            server,
        )  # fmt: skip
        paradigm_grpc.add_CostServiceServicer_to_server(
            CostServicer(
                self.ledger,
                registry,
                datetime.now(UTC),
                {"cpu": settings.cpu_price_per_core_hour, "cuda": settings.gpu_price_per_hour},
            ),
            server,
        )

    def _metric_families(self) -> Iterable[Metric]:
        """Every metric as /metrics would show it: this process's, or with `--workers N`
        every worker's, from their shared files."""
        if self.role is None:
            return self.metrics_registry.collect()
        from prometheus_client.multiprocess import MultiProcessCollector

        return MultiProcessCollector(None, path=self.role.metrics_dir).collect()

    def _require_dataplane(self) -> DataPlane:
        if self.dataplane is None:
            raise RuntimeError("the data plane is built before the control plane")
        return self.dataplane

    async def _set_health(self, *, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)

    async def _follow_peers(self) -> None:
        """Health follows every worker of `--workers N`: SERVING only while all are ready
        (the supervisor clears a dead worker's flag until its replacement is up)."""
        serving: bool | None = None
        while True:
            now = self.ready
            if now != serving:
                await self._set_health(serving=now)
                serving = now
            await asyncio.sleep(PEER_CHECK_SECONDS)

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
        if self.role is not None:
            self.role.ready_flags[self.role.slot] = 0
        if self._peers is not None:
            self._peers.cancel()
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
        if self._rest is not None:
            await self._rest.stop(grace)
        if self._server is not None:
            await self._server.stop(grace)
        if self._shadows is not None:
            await self._shadows.stop()
        if self._forwarder is not None:
            await self._forwarder.close()
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
        tracing.shutdown()  # exports the spans still buffered
        log.info("stopped")


def build_app(
    settings: Settings,
    metrics_registry: CollectorRegistry | None = None,
    role: ServingRole | None = None,
) -> App:
    return App(settings, metrics_registry, role)


async def _promote(
    promoter: Promoter, name: str, version: str, alias: str, gates: dict[str, Any], source: str
) -> str:
    """A search's winner promoted through the same gates as SetAlias; the outcome in words."""
    try:
        await promoter.promote(name, version, alias, Gates(**gates), source=source)
    except ParadigmError as exc:
        return f"refused: {exc.message}"
    return f"{name}:{version} -> {alias}"


async def _served(dataplane: DataPlane, name: str, version: str) -> dict[str, Any]:
    """A search's winner served through the data plane: its latency and serving bill."""
    return (await probe_serving(dataplane, name, version)).to_dict()


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
#: Requests for unknown models trigger at most one registry look this often.
MISS_POLL_SECONDS = 0.1


class RegistryPoller:
    """Picks up versions other replicas (or the owning worker) published or deleted.

    The query runs in a thread (the metadata store is a blocking client); listeners are
    told on the loop, where LoadedModels schedules its loads. A failed poll is logged and
    retried: a database restart must not take the serving of loaded models down with it.
    """

    def __init__(self, registry: ModelRegistry, metrics: Metrics) -> None:
        self._registry = registry
        self._metrics = metrics
        self._lock = asyncio.Lock()  # refresh allows one caller at a time
        self._warned_at = -POLL_WARNING_SECONDS
        self._failing = False
        self._polled_at = -MISS_POLL_SECONDS

    async def run(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            await self.poll()

    def moved_since(self, generation: MutableSequence[int]) -> Callable[[], bool]:
        """A check for the owner's shared change counter: True once per move, after
        which the caller polls (so a change during that poll is seen by the next check)."""
        seen = [generation[0]]

        def moved() -> bool:
            now = generation[0]
            if now == seen[0]:
                return False
            seen[0] = now
            return True

        return moved

    async def poll_on_miss(self) -> bool:
        """A look for a request that named an unknown model: at most one every
        MISS_POLL_SECONDS, so a flood of bad names cannot turn into a flood of queries."""
        if time.monotonic() - self._polled_at < MISS_POLL_SECONDS:
            return False
        return await self.poll()

    async def poll(self) -> bool:
        """One look; True when it found changes (and announced them)."""
        self._polled_at = time.monotonic()
        async with self._lock:
            try:
                changes = await asyncio.to_thread(self._registry.refresh)
            except Exception as exc:
                self._metrics.registry_polls.labels("failed").inc()
                now = time.monotonic()
                if now - self._warned_at >= POLL_WARNING_SECONDS:
                    log.warning("cannot poll the model registry: %s", exc)
                    self._warned_at = now
                self._failing = True
                return False
            self._metrics.registry_polls.labels("ok").inc()
            if self._failing:
                log.info("polling the model registry again")
                self._failing = False
            for change in changes:
                self._metrics.registry_changes.labels(change.event).inc(len(change.versions))
            self._registry.announce(changes)
            return bool(changes)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)

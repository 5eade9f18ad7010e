"""Model versions with live sessions: (name, version) -> LoadedModel, loaded on first use.

Sessions are created off the event loop; concurrent first requests for one version share a
single load. Which versions exist, and which is the latest, comes from the in-memory
ModelIndex (service/serving/index.py), so no request path touches SQLite, PostgreSQL or the
file system on the event loop; a first load reads them in the executor.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from service.datatypes import FLOAT_DATATYPES
from service.errors import NotFound
from service.metrics import Metrics, ServingSeries, drop_gauge
from service.registry.manifest import Manifest, TensorSpec
from service.registry.store import ModelRegistry
from service.serving.index import ModelIndex
from service.serving.runtime import OnnxModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputRule:
    """One input's check, worked out once at load so a request costs a few comparisons."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    rank: int
    #: The dims after the first when the first is the free batch dim and the rest are
    #: fixed (the usual case); None otherwise (checked dim by dim).
    tail: tuple[int, ...] | None
    batched: bool
    #: Floating point: checked for infinity, and for NaN unless the model imputes it.
    floating: bool
    #: NaN is a missing value the model imputes (a table model's numeric column).
    missing_allowed: bool = False
    #: A categorical column's training categories: others are counted as unknown.
    categories: frozenset[str] | None = None

    @classmethod
    def of(cls, spec: TensorSpec, column: dict[str, Any] | None = None) -> InputRule:
        batched = bool(spec.shape) and spec.shape[0] == -1
        tail = spec.shape[1:] if batched and -1 not in spec.shape[1:] else None
        column = column or {}
        kind = column.get("kind", "")
        return cls(
            name=spec.name,
            datatype=spec.datatype,
            shape=spec.shape,
            rank=len(spec.shape),
            tail=tail,
            batched=batched,
            floating=spec.datatype in FLOAT_DATATYPES,
            missing_allowed=kind == "numeric",
            categories=frozenset(column["categories"]) if kind == "categorical" else None,
        )


@dataclass(frozen=True)
class LoadedModel:
    """A model version ready to run."""

    manifest: Manifest
    runtime: OnnxModel
    inputs: dict[str, TensorSpec]
    output_names: list[str]
    output_types: dict[str, str]
    series: ServingSeries
    input_rules: tuple[InputRule, ...]
    #: The placement gauge's cpu_only_domains label ("ai.onnx.ml", "", "unknown").
    cpu_only_domains: str = "unknown"
    #: CPU seconds of a batch-1 run measured at load on a CPU session (None: not
    #: measured): what decides whether its runs may stay on the event loop.
    run_seconds: float | None = None

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def paradigm(self) -> str:
        return self.manifest.paradigm

    @property
    def device(self) -> str:
        return self.runtime.device


#: Batch-1 runs timed at load to decide whether a tiny model may run on the event loop.
MEASURED_RUNS = 7


class LoadedModels:
    """Loads, caches and evicts model versions."""

    def __init__(
        self,
        registry: ModelRegistry,
        index: ModelIndex,
        metrics: Metrics,
        executor: Executor,
        *,
        device: str,
        intra_op_threads: int,
        energy_source: Callable[[str], str],
        graph_optimization: str = "all",
        execution_mode: str = "sequential",
        device_models: Mapping[str, str] | None = None,
        gpu_mem_limit_bytes: int = 0,
        gpu_arena_extend_strategy: str = "kSameAsRequested",
        warmup: bool = True,
        io_binding: bool = True,
        measure_runs_below_s: float = 0.0,
    ) -> None:
        """measure_runs_below_s: time a CPU model's batch-1 run at load when its warm-up
        took less than a hundred times this (so that big models pay nothing for it); 0 = never."""
        self._registry = registry
        self._measure_runs_below_s = measure_runs_below_s
        self._index = index
        self._metrics = metrics
        self._executor = executor
        self._device = device
        self._device_models = dict(device_models or {})
        self._warmup = warmup
        self._intra_op_threads = intra_op_threads
        self._energy_source = energy_source
        self._session_options = {
            "graph_optimization": graph_optimization,
            "execution_mode": execution_mode,
            "arena_extend_strategy": gpu_arena_extend_strategy,
        }
        self._gpu_mem_limit_bytes = gpu_mem_limit_bytes
        # None: bind on CUDA sessions only (what the setting means); False: never.
        self._io_binding: bool | None = None if io_binding else False
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._loading: dict[tuple[str, str], asyncio.Future[LoadedModel]] = {}
        # Versions deleted while their load was in flight: evicted as soon as it lands
        # (deletions by other replicas arrive at any moment, by polling).
        self._withdrawn: set[tuple[str, str]] = set()
        self._preloading: set[asyncio.Task[None]] = set()
        # Built on the loop in App._start; publishes and deletes run in threads
        # (asyncio.to_thread), so their notifications are handed back to this loop.
        self._loop = asyncio.get_running_loop()
        registry.on_change(self._on_registry_change)
        #: Set where another process publishes: finds versions newer than the last poll.
        self.refresh_on_miss: Callable[[], Awaitable[bool]] | None = None
        #: Set in the workers of `--workers N`: says (cheaply, in shared memory) that the
        #: owner changed the registry since this process last looked.
        self.registry_moved: Callable[[], bool] | None = None
        #: What registry_moved calls for: one look at the registry, not rate-limited.
        self.catch_up: Callable[[], Awaitable[bool]] | None = None
        # name -> {alias: version} as shown by the alias gauge.
        self._shown_aliases: dict[str, dict[str, str]] = {}
        registry.on_alias_change(self._on_alias_change)
        for name, aliases in index.every_alias().items():
            self._show_aliases(name, aliases)

    async def get(self, name: str, version: str = "") -> LoadedModel:
        """The loaded version (latest when empty); NotFound/Unavailable as the registry says.

        Which versions exist is answered from the index, in memory; only a first load
        reads the registry and the file, in the executor."""
        if self.registry_moved is not None and self.registry_moved():
            assert self.catch_up is not None
            await self.catch_up()
        try:
            key = (name, self._index.resolve(name, version))
        except NotFound:
            # A follower of `--workers N` may be asked for a version the owner published
            # a moment ago, before its poll: look once, then answer.
            if self.refresh_on_miss is None or not await self.refresh_on_miss():
                raise
            key = (name, self._index.resolve(name, version))
        loaded = self._models.get(key)
        if loaded is not None:
            return loaded
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[key] = pending
            try:
                loaded = await self._load(*key)
                self._models[key] = loaded
                pending.set_result(loaded)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # marks it retrieved when nobody else waits
                raise
            finally:
                del self._loading[key]
                if key in self._withdrawn:
                    self._withdrawn.discard(key)
                    self._evict(key)
            return loaded
        return await asyncio.shield(pending)

    def loaded(self) -> list[LoadedModel]:
        return list(self._models.values())

    def device_for(self, name: str) -> str:
        """The serving device asked for `name`: its per-model override, else the default."""
        return self._device_models.get(name, self._device)

    async def _load(self, name: str, version: str) -> LoadedModel:
        device = self.device_for(name)

        def load() -> tuple[Manifest, OnnxModel, int, float | None, float | None]:
            # In the executor: the registry's row (SQLite or PostgreSQL), then the file
            # (with artifacts on S3, model_path downloads it first), then the warm-up.
            manifest = self._registry.get(name, version)
            path = self._registry.model_path(manifest)
            runtime = OnnxModel(
                path,
                device=device,
                intra_op_threads=self._intra_op_threads,
                gpu_mem_limit_bytes=self._gpu_mem_limit_bytes,
                io_binding=self._io_binding,
                **self._session_options,
            )
            warmup_seconds = self._warm_up(manifest, runtime)
            return (
                manifest, runtime, path.stat().st_size, warmup_seconds,
                self._measure_run(runtime, warmup_seconds),
            )  # fmt: skip

        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        manifest, runtime, size, warmup_seconds, run_seconds = await loop.run_in_executor(
            self._executor, contextvars.copy_context().run, load
        )
        elapsed = time.perf_counter() - started
        labels = (
            manifest.paradigm, manifest.name, manifest.version, manifest.algorithm, runtime.device,
        )  # fmt: skip
        self._metrics.model_load_duration.labels(*labels).observe(elapsed)
        # Made even without a sample, so that ServingSeries.remove finds it at eviction.
        warmup_series = self._metrics.model_warmup_duration.labels(*labels)
        if warmup_seconds is not None:
            warmup_series.observe(warmup_seconds)
        domains = (
            "unknown" if manifest.cpu_only_domains is None
            else ",".join(manifest.cpu_only_domains)
        )  # fmt: skip
        self._metrics.model_placement.labels(*labels, domains).set(1)
        self._metrics.model_data_kind.labels(*labels, data_kind(manifest)).set(1)
        self._metrics.models_loaded.labels(manifest.paradigm, runtime.device).inc()
        self._metrics.model_size.labels(
            manifest.paradigm, manifest.name, manifest.version, manifest.algorithm
        ).set(size)
        log.info(
            "loaded %s version %s on %s (%s) in %.3f s", manifest.name, manifest.version,
            runtime.device, ", ".join(runtime.providers), elapsed,
        )  # fmt: skip
        if runtime.device == "cuda" and domains:
            # Each CPU node costs a device-to-host copy and back: such a model may serve
            # faster on CPU altogether (PARADIGM_DEVICE_MODELS='{"name": "cpu"}').
            log.info(
                "%s version %s: nodes of %s run on the CPU provider in its CUDA session",
                manifest.name, manifest.version, domains,
            )  # fmt: skip
        columns = {column["name"]: column for column in manifest.input_columns}
        series = ServingSeries(self._metrics, labels, self._energy_source(runtime.device))
        series.watch_categories([c["name"] for c in columns.values() if c["kind"] == "categorical"])
        return LoadedModel(
            manifest=manifest,
            runtime=runtime,
            inputs={spec.name: spec for spec in runtime.inputs},
            output_names=[spec.name for spec in runtime.outputs],
            output_types={spec.name: spec.datatype for spec in runtime.outputs},
            series=series,
            input_rules=tuple(
                InputRule.of(spec, columns.get(spec.name)) for spec in runtime.inputs
            ),
            cpu_only_domains=domains,
            run_seconds=run_seconds,
        )

    def _warm_up(self, manifest: Manifest, runtime: OnnxModel) -> float | None:
        """Seconds of the warm-up run; None when disabled or failed. A failure is logged,
        not raised: the session itself loaded, and real requests may well succeed (zeros
        at batch 1 are not a valid input for every graph)."""
        if not self._warmup:
            return None
        started = time.perf_counter()
        try:
            runtime.warm_up()
        except Exception as exc:  # ORT's errors are untyped
            log.warning(
                "warm-up of %s version %s failed, serving it anyway: %s",
                manifest.name, manifest.version, exc,
            )  # fmt: skip
            return None
        return time.perf_counter() - started

    def _measure_run(self, runtime: OnnxModel, warmup_seconds: float | None) -> float | None:
        """The cheapest of a few batch-1 runs after the warm-up (CPU time of this thread: a
        busy machine preempting it must not make a tiny model look slow), for small CPU
        models only."""
        limit = self._measure_runs_below_s
        if warmup_seconds is None or runtime.device != "cpu" or warmup_seconds > 100 * limit:
            return None
        times = []
        for _ in range(MEASURED_RUNS):
            started = time.thread_time()
            runtime.warm_up()
            times.append(time.thread_time() - started)
        return min(times)

    async def preload(self, keys: list[tuple[str, str]]) -> None:
        """Loads versions before their first request: no load on the request path, and
        their series exist at zero before traffic, so Prometheus' rate() sees all of it."""
        for name, version in keys:
            try:
                await self.get(name, version)
            except NotFound:  # deleted again (here or by another replica) before we looked
                continue
            except Exception as exc:  # a broken file must not stop the others loading
                log.warning("could not preload %s version %s: %s", name, version, exc)

    def _on_registry_change(self, event: str, name: str, versions: list[str]) -> None:
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._registry_changed(event, name, versions)
        else:
            self._loop.call_soon_threadsafe(self._registry_changed, event, name, versions)

    def _on_alias_change(self, name: str, aliases: dict[str, str]) -> None:
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._aliases_changed(name, aliases)
        else:
            self._loop.call_soon_threadsafe(self._aliases_changed, name, aliases)

    def _aliases_changed(self, name: str, aliases: dict[str, str]) -> None:
        """Shows the aliases, and loads a version an alias now points at before its first
        request (a promoted older version may not be loaded, e.g. after a restart)."""
        self._show_aliases(name, aliases)
        keys = sorted({(name, v) for v in aliases.values()} - set(self._models))
        if keys:
            task = asyncio.get_running_loop().create_task(self.preload(keys))
            self._preloading.add(task)
            task.add_done_callback(self._preloading.discard)

    def _show_aliases(self, name: str, aliases: dict[str, str]) -> None:
        gauge = self._metrics.model_alias
        for alias, version in self._shown_aliases.pop(name, {}).items():
            if aliases.get(alias) != version:
                gauge.remove(name, alias, version)
        for alias, version in aliases.items():
            gauge.labels(name, alias, version).set(1)
        if aliases:
            self._shown_aliases[name] = dict(aliases)

    def _registry_changed(self, event: str, name: str, versions: list[str]) -> None:
        if event == "published":
            keys = [(name, version) for version in versions]
            task = asyncio.get_running_loop().create_task(self.preload(keys))
            self._preloading.add(task)
            task.add_done_callback(self._preloading.discard)
            return
        for version in versions:
            if (name, version) in self._loading:
                self._withdrawn.add((name, version))
            self._evict((name, version))

    def _evict(self, key: tuple[str, str]) -> None:
        evicted = self._models.pop(key, None)
        if evicted is not None:
            self._metrics.models_loaded.labels(evicted.paradigm, evicted.device).dec()
            manifest = evicted.manifest
            drop_gauge(
                self._metrics.model_size,
                manifest.paradigm, manifest.name, manifest.version, manifest.algorithm,
            )  # fmt: skip
            evicted.series.remove()
            labels = evicted.series.labels
            drop_gauge(self._metrics.model_placement, *labels, evicted.cpu_only_domains)
            drop_gauge(self._metrics.model_data_kind, *labels, data_kind(manifest))


def data_kind(manifest: Manifest) -> str:
    """What a model takes, from its signature: a table's columns, image pixels (UINT8), or
    the feature rows of array datasets; "imported" for models that came as files."""
    if not manifest.dataset:
        return "imported"
    if manifest.input_columns:
        return "table"
    if manifest.inputs and manifest.inputs[0].datatype == "UINT8":
        return "images"
    return "arrays"

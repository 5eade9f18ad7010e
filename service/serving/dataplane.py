"""The one data plane: every inference, whatever the transport, goes through `infer`.

It resolves the model, checks the inputs against the model's signature (name, datatype,
shape, finite values) before running anything, runs the session off the event loop, and
records the serving metrics once, here.

Every run goes through a per-model-version Batcher, which bounds what waits for the
inference threads (ResourceExhausted past batch_max_queue_size) and drops requests whose
deadline passed before they ran. Models that cannot batch (no batch axis, or batching off)
get one that takes a single request per run.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import json
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from service.cost.ledger import CostLedger
from service.errors import InvalidArgument, NotFound, ParadigmError, Unavailable
from service.logs import model_name_var, model_version_var, request_id_var
from service.registry.manifest import TensorSpec
from service.serving.batcher import Batcher, BatchingConfig
from service.serving.index import ModelIndex
from service.serving.loaded import LoadedModel, LoadedModels
from service.serving.tensors import InferInput, InferOutput, InferRequest, InferResponse

T = TypeVar("T")


def choose_batching(
    name: str,
    device: str,
    default: BatchingConfig,
    gpu: BatchingConfig | None,
    per_model: dict[str, BatchingConfig],
) -> BatchingConfig:
    """A model's own override first, then the GPU sizing for a CUDA session, then the
    default: the device is known only once the session exists, hence here and not at start."""
    if name in per_model:
        return per_model[name]
    if device == "cuda" and gpu is not None:
        return gpu
    return default


@dataclass(frozen=True)
class ModelDescription:
    """What ModelMetadata and ModelConfig say of a loaded version, whatever the transport."""

    name: str
    version: str
    #: Every version of the name, oldest first.
    versions: list[str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    device: str
    #: Free-form facts ModelMetadata carries: device, providers, cpu_only_domains,
    #: paradigm, algorithm, version.
    parameters: dict[str, str]


def _unknown_categories(data: np.ndarray, known: frozenset[str]) -> int:
    """Values never seen in training; "" is a missing value, not an unknown one. The set of
    distinct values is made in C; rows are counted one by one only when some are unknown."""
    values = data.reshape(-1).tolist()
    unknown = set(values) - known - {""}
    return sum(1 for value in values if value in unknown) if unknown else 0


def _run_in_context(
    loop: asyncio.AbstractEventLoop, executor: Executor, run: Callable[..., T], *args: Any
) -> asyncio.Future[T]:
    """run(*args) in an executor thread, in a copy of the caller's context: the thread's
    log lines then carry the request's model, version and id (service/logs.py), which
    run_in_executor alone would leave behind on the loop."""
    return loop.run_in_executor(executor, contextvars.copy_context().run, run, *args)


class DataPlane:
    """Validates, runs (batched where it helps) and measures inference requests, and says
    which models exist and are ready."""

    def __init__(
        self,
        models: LoadedModels,
        index: ModelIndex,
        ledger: CostLedger,
        executor: Executor,
        *,
        max_batch_size: int,
        batching: BatchingConfig,
        batching_models: dict[str, BatchingConfig],
        run_slots: int,
        gpu_batching: BatchingConfig | None = None,
    ) -> None:
        self._models = models
        self._index = index
        self._ledger = ledger
        self._executor = executor
        self._max_batch_size = max_batch_size
        self._batching = batching
        self._batching_models = batching_models
        self._gpu_batching = gpu_batching
        self._run_slots = run_slots
        self._batchers: dict[tuple[str, str], Batcher] = {}

    async def infer(self, request: InferRequest) -> InferResponse:
        arrived = request.arrived or time.perf_counter()
        model_name_var.set(request.model_name)
        request_id_var.set(request.id or "-")
        model = await self._models.get(request.model_name, request.model_version)
        model_version_var.set(model.version)
        series = model.series
        series.in_flight.inc()
        try:
            feeds, rows = self._check_inputs(model, request.inputs)
            wanted = self._check_outputs(model, request.outputs)
            batcher = self._batchers.get((model.name, model.version)) or self._batcher(model)
            every = await batcher.submit(feeds, rows, request.deadline)
            results = (
                every if wanted is model.output_names
                else [every[model.output_names.index(name)] for name in wanted]
            )  # fmt: skip
        except ParadigmError as exc:
            series.failed(exc.status.name)
            raise
        except asyncio.CancelledError:
            # gRPC cancels the handler when the deadline passes or the client hangs up;
            # counting these shows how much work came too late to be useful. A client's own
            # deadline timer may fire first (its clock started before the request was sent),
            # so some expiries show as CANCELLED.
            expired = request.deadline is not None and time.perf_counter() >= request.deadline
            series.failed("DEADLINE_EXCEEDED" if expired else "CANCELLED")
            raise
        except Exception:
            series.failed("INTERNAL")
            raise
        finally:
            series.in_flight.dec()
        outputs = [
            InferOutput(name=name, datatype=model.output_types[name], data=data)
            for name, data in zip(wanted, results, strict=True)
        ]
        series.ok.inc()
        series.predictions.inc(rows)
        series.duration.observe(time.perf_counter() - arrived)
        return InferResponse(
            model_name=model.name,
            model_version=model.version,
            outputs=outputs,
            id=request.id,
            parameters={"device": model.device},
        )

    async def ready(self, name: str, version: str = "") -> bool:
        """Whether the version (latest when empty) can serve: loaded now if need be."""
        try:
            await self._models.get(name, version)
        except (NotFound, Unavailable):
            return False
        return True

    async def model(self, name: str, version: str = "") -> LoadedModel:
        """The loaded version (latest when empty), loaded now if need be."""
        return await self._models.get(name, version)

    @property
    def max_batch_size(self) -> int:
        """The most rows one request may carry."""
        return self._max_batch_size

    async def describe(self, name: str, version: str = "") -> ModelDescription:
        """The version's signature and placement (loaded now if need be); NotFound or
        Unavailable as ready() would say False."""
        model = await self._models.get(name, version)
        runtime = model.runtime
        return ModelDescription(
            name=model.name,
            version=model.version,
            versions=self._index.versions(model.name),
            inputs=list(runtime.inputs),
            outputs=list(runtime.outputs),
            device=model.device,
            parameters={
                "device": model.device,
                # Where nodes really run: the session's providers in ORT's order of
                # preference, and the operator domains left on CPU even on CUDA ("unknown"
                # for models whose manifest predates the record).
                "providers": ",".join(runtime.providers),
                "cpu_only_domains": model.cpu_only_domains,
                "paradigm": model.paradigm,
                "algorithm": model.manifest.algorithm,
                "version": model.version,
                # The classes "label" answers, in the order of "probabilities" (JSON).
                **(
                    {"classes": json.dumps(model.manifest.class_names)}
                    if model.manifest.class_names
                    else {}
                ),
            },
        )

    def _batcher(self, model: LoadedModel) -> Batcher:
        """The model's batcher, made on its first request. Where batching is off, or the
        model has no batch axis on every input and output to concatenate along, it runs
        one request at a time but keeps the queue bound and the deadline checks."""
        self._forget_unloaded()
        config = choose_batching(
            model.name, model.device, self._batching, self._gpu_batching, self._batching_models
        )
        tensors = [*model.runtime.inputs, *model.runtime.outputs]
        if not (config.enabled and all(spec.shape and spec.shape[0] == -1 for spec in tensors)):
            config = dataclasses.replace(config, max_batch_size=1, max_queue_delay_us=0)
        loop = asyncio.get_running_loop()
        batcher = Batcher(
            name=model.name,
            input_names=list(model.inputs),
            output_names=model.output_names,
            run=functools.partial(self._run, model),
            run_in_thread=functools.partial(_run_in_context, loop, self._executor),
            config=config,
            slots=self._run_slots,
        )
        self._batchers[(model.name, model.version)] = batcher
        return batcher

    def _forget_unloaded(self) -> None:
        """Drops the idle batchers of deleted versions: each holds its model's session, so
        keeping them would leak one session per deleted version. Runs only when a batcher
        is made (a version's first request), so the hot path pays nothing."""
        loaded = {(m.name, m.version) for m in self._models.loaded()}
        for key in [k for k, b in self._batchers.items() if k not in loaded and b.idle]:
            self._batchers.pop(key).close()

    def _run(
        self,
        model: LoadedModel,
        feeds: dict[str, np.ndarray],
        output_names: list[str],
        rows: int,
        enqueued: list[float],
    ) -> list[np.ndarray]:
        """Runs in an inference thread: one model run (a request or a batch), its timing
        and its cost."""
        started = time.perf_counter()
        cpu_started = time.thread_time()
        results = model.runtime.run(feeds, output_names)
        compute = time.perf_counter() - started
        # CPU time of this thread is the model's CPU time as long as ONNX Runtime runs the
        # graph in the calling thread (intra_op_threads=1, the default). On CUDA the GPU is
        # what the run occupies, for its wall time.
        device_seconds = compute if model.device == "cuda" else time.thread_time() - cpu_started
        series = model.series
        for moment in enqueued:
            series.queue_wait.observe(started - moment)
        series.compute.observe(compute)
        series.batch_size.observe(rows)
        self._ledger.serve(series, rows, device_seconds)
        return results

    def _check_inputs(
        self, model: LoadedModel, inputs: list[InferInput]
    ) -> tuple[dict[str, np.ndarray], int]:
        expected = model.inputs
        given = {tensor.name: tensor for tensor in inputs}
        if len(given) != len(inputs):
            raise InvalidArgument("an input name appears more than once")
        if given.keys() != expected.keys():
            described = ", ".join(
                f"{spec.name} {spec.datatype} {list(spec.shape)}" for spec in expected.values()
            )
            unknown = sorted(set(given) - set(expected))
            if unknown:
                raise InvalidArgument(
                    f"unexpected input {unknown[0]!r}; model {model.name!r} expects: {described}"
                )
            missing = sorted(set(expected) - set(given))
            raise InvalidArgument(
                f"missing input {missing[0]!r}; model {model.name!r} expects: {described}"
            )
        feeds: dict[str, np.ndarray] = {}
        rows, previous = 0, ""
        for rule in model.input_rules:
            name = rule.name
            tensor = given[name]
            if tensor.datatype != rule.datatype:
                raise InvalidArgument(
                    f"input {name!r} has datatype {tensor.datatype}; model expects {rule.datatype}"
                )
            shape = tensor.data.shape
            # The usual signature is [-1, fixed...]: one tuple comparison checks it.
            if rule.tail is not None:
                fits = len(shape) == rule.rank and shape[1:] == rule.tail
            else:
                fits = len(shape) == rule.rank and all(
                    want in (-1, got) for want, got in zip(rule.shape, shape, strict=True)
                )
            if not fits:
                raise InvalidArgument(
                    f"input {name!r} has shape {list(shape)}; model expects "
                    f"{list(rule.shape)} (-1 means any size)"
                )
            if rule.batched:
                batch = shape[0]
                if rows and batch != rows:
                    raise InvalidArgument(
                        f"input {name!r} has {batch} rows but {previous!r} has {rows}; every "
                        "input (column) needs one value per row"
                    )
                rows, previous = batch, name
                if batch == 0:
                    # Measured: ONNX Runtime 1.31 aborts the whole process on an LSTM given
                    # an empty batch, so no empty batch ever reaches a session.
                    raise InvalidArgument(f"input {name!r} has an empty batch (0 rows)")
                if batch > self._max_batch_size:
                    raise InvalidArgument(
                        f"input {name!r} has a batch of {batch} rows; the most is "
                        f"{self._max_batch_size}"
                    )
            data = tensor.data
            if rule.floating:
                if rule.missing_allowed:
                    if np.isinf(data).any():
                        raise InvalidArgument(
                            f"input {name!r} holds infinity; values must be finite (NaN "
                            "marks a missing value)"
                        )
                elif not np.isfinite(data).all():
                    raise InvalidArgument(
                        f"input {name!r} holds NaN or infinity; values must be finite"
                    )
            elif rule.categories is not None:  # BYTES arrive as str (api/codec.py)
                unseen = _unknown_categories(data, rule.categories)
                if unseen:
                    model.series.unknown_categories[name].inc(unseen)
            feeds[name] = data
        return feeds, rows or 1  # a model without a batch dimension predicts one row

    def _check_outputs(self, model: LoadedModel, wanted: list[str]) -> list[str]:
        if not wanted:
            return model.output_names
        unknown = [name for name in wanted if name not in model.output_types]
        if unknown:
            raise InvalidArgument(
                f"unknown output {unknown[0]!r}; model {model.name!r} has outputs "
                f"{model.output_names}"
            )
        return list(wanted)

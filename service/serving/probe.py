"""Measures a published model by serving it: latency per batch size and what it costs.

`probe_serving` sends requests through the data plane itself (DataPlane.infer: the input
checks, the model's batcher, the inference threads, the serving metrics), one after
another, at each batch size asked for, and reads the bill from the cost ledger: a
ServingTap in the probe's context collects the ledger's own charge of every run those
requests caused (service/cost/ledger.py), so the cost per 1 000 predictions is priced
exactly as real traffic is.

Latency is the data plane's, from entry to answer: no network and no protobuf, which a
client adds on top. The probe's requests are real requests: they count in the serving
metrics and the cost report like any other.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from service.cost.ledger import ServingTap, serving_tap
from service.datatypes import DATATYPES
from service.errors import InvalidArgument
from service.registry.manifest import TensorSpec
from service.serving.dataplane import DataPlane
from service.serving.loaded import LoadedModel
from service.serving.tensors import InferInput, InferRequest

DEFAULT_REQUESTS = 100
MAX_REQUESTS = 10_000
DEFAULT_BATCH_SIZES = (1, 64)
#: Untimed requests per batch size before measuring: the first runs of a session (and of
#: a new batch shape) allocate.
WARMUP_REQUESTS = 3
#: Rows of synthetic data made once and cycled through.
SYNTHETIC_ROWS = 256
_WORDS = ("alpha", "beta", "gamma", "delta", "serving", "model", "price", "quick", "data")


@dataclass(frozen=True)
class BatchMeasure:
    """What serving one batch size measured: latency of each request, and its bill."""

    batch_size: int
    requests: int
    p50_ms: float
    p99_ms: float
    #: Rows the ledger charged for these requests' runs (more than requests x batch_size
    #: only if other traffic was batched together with them).
    predictions: int
    device_seconds_per_1k: float
    joules_per_1k: float
    dollars_per_1k: float


@dataclass(frozen=True)
class ServingProbe:
    """A model version's serving figures, one BatchMeasure per batch size probed."""

    name: str
    version: str
    device: str
    #: How joules were obtained ("rapl", "estimate", "nvml"; "" where none were).
    energy_source: str
    #: True when the rows were made from the model's signature, not given.
    synthetic: bool
    batches: tuple[BatchMeasure, ...]

    def at(self, batch_size: int) -> BatchMeasure:
        for measure in self.batches:
            if measure.batch_size == batch_size:
                return measure
        raise KeyError(f"batch size {batch_size} was not probed")

    @property
    def worst_p99_ms(self) -> float:
        return max(measure.p99_ms for measure in self.batches)

    @property
    def worst_joules_per_1k(self) -> float:
        return max(measure.joules_per_1k for measure in self.batches)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready figures (stored as evidence, printed by clients)."""
        return {**asdict(self), "batches": [asdict(measure) for measure in self.batches]}


async def probe_serving(
    dataplane: DataPlane,
    name: str,
    version: str = "",
    *,
    rows: Mapping[str, np.ndarray] | None = None,
    requests: int = DEFAULT_REQUESTS,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    seed: int = 0,
) -> ServingProbe:
    """Serves `requests` requests at each batch size, one at a time, through the data plane.

    `rows` are the inputs by name, each with the same number of rows (cycled through to
    fill the batches); None makes random rows from the model's signature (a table model's
    categories from its manifest). The version (latest when empty, or an alias) is resolved
    once, so every request serves the same one. A model whose inputs have no batch axis is
    probed at its one fixed shape (batch size 1). Errors are the data plane's
    (NotFound, InvalidArgument for rows that do not fit the model, ...).
    """
    if not 1 <= requests <= MAX_REQUESTS:
        raise InvalidArgument(f"requests {requests} must be between 1 and {MAX_REQUESTS}")
    if not batch_sizes or any(size < 1 for size in batch_sizes):
        raise InvalidArgument(f"batch sizes {list(batch_sizes)} must be 1 or more")
    model = await dataplane.model(name, version)
    specs = list(model.inputs.values())
    batched = all(spec.shape and spec.shape[0] == -1 for spec in specs)
    sizes = (
        sorted({min(size, dataplane.max_batch_size) for size in batch_sizes}) if batched else [1]
    )
    rng = np.random.default_rng(seed)
    pool = _given_rows(model, rows) if rows is not None else _synthetic_rows(model, rng, batched)
    measures = []
    for size in sizes:
        feeds = [
            _slice(model, pool, i * size, size, batched) for i in range(WARMUP_REQUESTS + requests)
        ]
        for inputs in feeds[:WARMUP_REQUESTS]:
            await dataplane.infer(_request(model, inputs))
        measures.append(await _measure(dataplane, model, size, feeds[WARMUP_REQUESTS:]))
    return ServingProbe(
        name=model.name,
        version=model.version,
        device=model.device,
        energy_source=model.series.energy_source,
        synthetic=rows is None,
        batches=tuple(measures),
    )


async def _measure(
    dataplane: DataPlane, model: LoadedModel, size: int, feeds: list[list[InferInput]]
) -> BatchMeasure:
    tap = ServingTap()
    token = serving_tap.set(tap)
    latencies = []
    try:
        for inputs in feeds:
            started = time.perf_counter()
            await dataplane.infer(_request(model, inputs, arrived=started))
            latencies.append(time.perf_counter() - started)
    finally:
        serving_tap.reset(token)
    p50, p99 = np.percentile(np.array(latencies) * 1000.0, [50, 99])
    per_1k = 1000.0 / tap.rows if tap.rows else 0.0
    return BatchMeasure(
        batch_size=size,
        requests=len(feeds),
        p50_ms=float(p50),
        p99_ms=float(p99),
        predictions=tap.rows,
        device_seconds_per_1k=tap.charge.device_seconds * per_1k,
        joules_per_1k=tap.charge.joules * per_1k,
        dollars_per_1k=tap.charge.dollars * per_1k,
    )


def _request(model: LoadedModel, inputs: list[InferInput], arrived: float = 0.0) -> InferRequest:
    return InferRequest(
        model_name=model.name,
        model_version=model.version,
        inputs=inputs,
        id="serving-probe",
        arrived=arrived,
    )


def _given_rows(model: LoadedModel, rows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The given rows typed as the model's inputs; the data plane checks the rest."""
    arrays = {}
    for name, data in rows.items():
        spec = model.inputs.get(name)
        try:
            arrays[name] = np.asarray(data, dtype=DATATYPES[spec.datatype].dtype if spec else None)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"rows of input {name!r} do not fit {spec}: {exc}") from None
    counts = {name: (len(data) if data.ndim else 0) for name, data in arrays.items()}
    if not arrays or min(counts.values()) < 1:
        raise InvalidArgument("rows to probe with need at least one row for every input")
    if len(set(counts.values())) > 1:
        raise InvalidArgument(f"rows to probe with have different row counts per input: {counts}")
    return arrays


def _synthetic_rows(
    model: LoadedModel, rng: np.random.Generator, batched: bool
) -> dict[str, np.ndarray]:
    columns = {column["name"]: column for column in model.manifest.input_columns}
    count = SYNTHETIC_ROWS if batched else 1
    return {
        spec.name: _synthetic(spec, columns.get(spec.name, {}), rng, count, batched)
        for spec in model.inputs.values()
    }


def _synthetic(
    spec: TensorSpec,
    column: Mapping[str, Any],
    rng: np.random.Generator,
    count: int,
    batched: bool,
) -> np.ndarray:
    """Random values of a tensor's datatype; free dims other than the batch are 1."""
    tail = [dim if dim > 0 else 1 for dim in spec.shape[1:]] if batched else None
    shape = (count, *tail) if tail is not None else tuple(max(d, 1) for d in spec.shape)
    kind = column.get("kind", "")
    if spec.datatype == "BYTES":
        categories = list(column.get("categories") or [])
        vocabulary = categories if kind == "categorical" and categories else list(_WORDS)
        words = rng.choice(vocabulary, size=shape)
        if kind == "text":
            words = np.char.add(np.char.add(words, " "), rng.choice(_WORDS, size=shape))
        data = np.empty(shape, dtype=object)
        data[...] = words.astype(str)
        return data
    if spec.datatype == "BOOL":
        return rng.random(shape) < 0.5
    if spec.datatype in ("FP16", "FP32", "FP64"):
        return rng.standard_normal(shape).astype(_numpy_type(spec.datatype))
    if spec.datatype == "UINT8":
        return rng.integers(0, 256, size=shape).astype(np.uint8)
    # Other integers: small values, valid as token or category ids of any vocabulary.
    return rng.integers(0, 2, size=shape).astype(_numpy_type(spec.datatype))


def _numpy_type(datatype: str) -> np.dtype:
    return DATATYPES[datatype].dtype


def _slice(
    model: LoadedModel, pool: Mapping[str, np.ndarray], start: int, size: int, batched: bool
) -> list[InferInput]:
    """`size` rows of every input from `start`, wrapping around the pool."""
    inputs = []
    for name, data in pool.items():
        if batched:
            chosen = np.take(data, np.arange(start, start + size) % len(data), axis=0)
        else:
            chosen = data
        spec = model.inputs.get(name)
        # An unknown name keeps a datatype the data plane then refuses by name.
        datatype = spec.datatype if spec else "FP32"
        inputs.append(InferInput(name=name, datatype=datatype, data=chosen))
    return inputs

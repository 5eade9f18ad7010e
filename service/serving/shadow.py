"""Shadows: an alias's sampled requests also run through a second model, off their path.

A request through an alias that carries a shadow (service/registry/aliases.py Shadow) is
served by the alias's model as usual; once its answer is ready, a sampled one is put on a
bounded queue and the caller gets the answer at once. Background tasks take the queue and
run the same inputs through the shadow model on the same data plane, then record per pair
(model, alias, primary "model:version", shadow "model:version"): agreement row by row,
both latencies and both costs (metrics in service/metrics.py, paradigm_shadow_*).

Nothing the shadow does reaches the primary's answer: it runs after that answer exists,
its errors are counted and logged, and when the queue is full the new shadow run is
dropped (counted) rather than waited for. The shadow also gives way: at most `tasks` shadow
runs are in flight per process, each starts only when the primaries leave the event loop
idle, and a task spends at most `max_share` of its time on shadow runs, so under load the
queue fills and shadows are dropped first.

Feedback: each shadowed request's two answers are kept by request id (the OIP request id,
or one generated and returned as the response's id) for the last `feedback_window`
shadowed requests of this process; SubmitFeedback with the true labels turns agreement
into accuracy for both sides. With `--workers N` feedback reaches the job owner (the
control plane is forwarded there), so only the requests the owner served can be matched;
agreement, latency and cost add up over every worker (the report reads the shared
metrics files).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client.core import Metric

from service.cost.ledger import ServingTap, serving_tap
from service.errors import InvalidArgument, NotFound
from service.metrics import Metrics
from service.registry.aliases import LATEST, Shadow
from service.serving.tensors import InferOutput, InferRequest, InferResponse

log = logging.getLogger(__name__)

LABEL = "label"
PROBABILITIES = "probabilities"
ROLES = ("primary", "shadow")
COST_UNITS = ("device_seconds", "joules", "dollars")
#: How long a shadow task waits before looking for room again while the primaries are busy.
BACKOFF_SECONDS = 0.002
#: The response parameter naming the request id feedback must quote.
REQUEST_ID = "request_id"

Infer = Callable[[InferRequest], Awaitable[InferResponse]]
ShadowLookup = Callable[[str, str], Shadow | None]


def label_text(value: object) -> str:
    """A label as text, whatever the graph answered it as (bytes, 3.0, 3): how answers of
    two models (a cascade's stages, a primary and its shadow) are compared."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def compared_output(outputs: list[InferOutput]) -> InferOutput | None:
    """What the two answers are compared on: the label, else the most probable class,
    else the first output (a regressor's value)."""
    by_name = {o.name: o for o in outputs}
    return by_name.get(LABEL) or by_name.get(PROBABILITIES) or (outputs[0] if outputs else None)


def answers(output: InferOutput) -> np.ndarray:
    """One answer per row: labels as text, the argmax of probabilities, or float values."""
    data = np.asarray(output.data)
    if output.name == PROBABILITIES and data.ndim == 2:
        return data.argmax(axis=1)
    if data.dtype.kind in "fc":
        return data.reshape(len(data), -1).astype(np.float64)
    first_column = data.reshape(len(data), -1)[:, 0].tolist()
    return np.array([label_text(v) for v in first_column], dtype=object)


def agreeing(primary: np.ndarray, shadow: np.ndarray, tolerance: float) -> np.ndarray:
    """Per row, whether both sides answered alike (within tolerance for float values)."""
    if primary.shape != shadow.shape:
        raise InvalidArgument(
            f"the shadow answered shape {list(shadow.shape)}, the primary {list(primary.shape)}"
        )
    if primary.dtype.kind == "f":
        close = np.isclose(primary, shadow, rtol=tolerance, atol=tolerance)
        return np.asarray(close.reshape(len(close), -1).all(axis=1))
    return np.asarray(primary == shadow)


def stage(name: str, version: str) -> str:
    return f"{name}:{version}"


@dataclass(slots=True)
class _Series:
    """One pair's labelled metric children, made once: the hot path only increments."""

    sampled: Any
    dropped: Any
    failed: Any
    shadowed: Any
    agree: Any
    disagree: Any
    latency: dict[str, Any]
    cost: dict[tuple[str, str], Any]
    rows: dict[str, Any]

    @classmethod
    def of(cls, metrics: Metrics, labels: tuple[str, str, str, str]) -> _Series:
        requests = metrics.shadow_requests
        return cls(
            sampled=requests.labels(*labels, "sampled"),
            dropped=requests.labels(*labels, "dropped"),
            failed=requests.labels(*labels, "failed"),
            shadowed=requests.labels(*labels, "shadowed"),
            agree=metrics.shadow_rows.labels(*labels, "agree"),
            disagree=metrics.shadow_rows.labels(*labels, "disagree"),
            latency={role: metrics.shadow_latency.labels(*labels, role) for role in ROLES},
            cost={
                (role, unit): metrics.shadow_cost.labels(*labels, role, unit)
                for role in ROLES
                for unit in COST_UNITS
            },
            rows={role: metrics.shadow_charged_rows.labels(*labels, role) for role in ROLES},
        )

    def charge(self, role: str, tap: ServingTap) -> None:
        charge = tap.charge
        self.cost[(role, "device_seconds")].inc(charge.device_seconds)
        self.cost[(role, "joules")].inc(charge.joules)
        self.cost[(role, "dollars")].inc(charge.dollars)
        self.rows[role].inc(tap.rows)


@dataclass(slots=True)
class _Run:
    """One sampled request waiting for its shadow run: the primary's answer as it went
    out (compared when the shadow has answered, off the request's path)."""

    labels: tuple[str, str, str, str]
    series: _Series
    request: InferRequest
    response: InferResponse
    primary_latency: float
    primary_tap: ServingTap


@dataclass(slots=True)
class _Kept:
    """Both answers of a shadowed request, until its feedback arrives."""

    labels: tuple[str, str, str, str]
    primary: np.ndarray
    shadow: np.ndarray


@dataclass(frozen=True)
class Feedback:
    """What one SubmitFeedback matched: rows, and how many each side got right."""

    rows: int
    primary_correct: int
    shadow_correct: int


class ShadowRunner:
    """Samples, queues and runs shadow requests; keeps answers for feedback.

    Shadow runs wait while more than `busy_in_flight` requests through shadowed aliases
    are being served in this process: the shadow takes the CPU the primaries leave idle,
    and under sustained load its queue fills and new shadow runs are dropped (counted)."""

    def __init__(
        self,
        lookup: ShadowLookup,
        metrics: Metrics,
        *,
        queue_size: int,
        tasks: int,
        feedback_window: int,
        tolerance: float,
        busy_in_flight: int = 0,
        idle_lag: float = 1e-4,
        max_share: float = 1.0,
    ) -> None:
        self._lookup = lookup
        self._metrics = metrics
        self._queue: asyncio.Queue[_Run] = asyncio.Queue(maxsize=queue_size)
        self._tasks_wanted = tasks
        self._tasks: list[asyncio.Task[None]] = []
        self._window = feedback_window
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self._tolerance = tolerance
        self._infer: Infer | None = None
        self._series: dict[tuple[str, str, str, str], _Series] = {}
        self._busy = busy_in_flight
        self._idle_lag = idle_lag
        self._max_share = max_share
        self._in_flight = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        #: Set in the workers of `--workers N` as on LoadedModels: a cheap check of the
        #: owner's change counter, and the registry poll it calls for, so a shadow set a
        #: moment ago is seen by the very next request.
        self.registry_moved: Callable[[], bool] | None = None
        self.catch_up: Callable[[], Awaitable[bool]] | None = None

    def start(self, infer: Infer) -> None:
        """Starts the shadow tasks; `infer` runs a shadow request (the data plane's)."""
        self._infer = infer
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._work()) for _ in range(self._tasks_wanted)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def shadow_for(self, request: InferRequest) -> Shadow | None:
        """The shadow of the alias a request names, if any: one dict lookup (after a
        registry poll in a follower whose owner changed something)."""
        version = request.model_version
        if not version:
            return None
        if self.registry_moved is not None and self.registry_moved():
            assert self.catch_up is not None
            await self.catch_up()
        return self._lookup(request.model_name, version)

    async def serve(self, shadow: Shadow, request: InferRequest, infer: Infer) -> InferResponse:
        """The primary's answer, unchanged; a sampled request is queued for its shadow."""
        if shadow.sample_rate < 1.0 and random.random() >= shadow.sample_rate:
            return await infer(request)
        if self._queue.full():
            # Dropped before any bookkeeping: under load a shadow costs the primaries two
            # counter increments per request, nothing more.
            response = await infer(request)
            _, series = self._pair(shadow, stage(response.model_name, response.model_version))
            series.sampled.inc()
            series.dropped.inc()
            return response
        started = request.arrived or time.perf_counter()
        if not request.id:
            request.id = uuid.uuid4().hex
        tap = ServingTap()
        token = serving_tap.set(tap)
        self._in_flight += 1
        if self._in_flight > self._busy:
            self._quiet.clear()
        try:
            response = await infer(request)
        finally:
            serving_tap.reset(token)
            self._in_flight -= 1
            if self._in_flight <= self._busy:
                self._quiet.set()
        try:
            self._offer(shadow, request, response, time.perf_counter() - started, tap)
        except Exception:  # whatever happens here, the primary's answer goes out
            log.exception("could not queue the shadow run of %s", request.model_name)
        response.parameters[REQUEST_ID] = request.id
        return response

    def _pair(self, shadow: Shadow, primary: str) -> tuple[tuple[str, str, str, str], _Series]:
        shadowing = stage(shadow.shadow, shadow.shadow_version or LATEST)
        labels = (shadow.name, shadow.alias, primary, shadowing)
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = _Series.of(self._metrics, labels)
        return labels, series

    def _offer(
        self,
        shadow: Shadow,
        request: InferRequest,
        response: InferResponse,
        latency: float,
        tap: ServingTap,
    ) -> None:
        labels, series = self._pair(shadow, stage(response.model_name, response.model_version))
        series.sampled.inc()
        run = _Run(
            labels=labels,
            series=series,
            request=InferRequest(
                model_name=shadow.shadow,
                model_version=shadow.shadow_version,
                inputs=request.inputs,
                id=request.id,
            ),
            response=response,
            primary_latency=latency,
            primary_tap=tap,
        )
        try:
            self._queue.put_nowait(run)
        except asyncio.QueueFull:
            series.dropped.inc()
            return
        self._metrics.shadow_queue_depth.inc()

    async def _work(self) -> None:
        while True:
            run = await self._queue.get()
            self._metrics.shadow_queue_depth.dec()
            try:
                await self._room()
                began = time.perf_counter()
                try:
                    await self._run(run)
                finally:
                    # A budget: each task spends at most max_share of its time on shadow
                    # runs, so a shadow never takes more than that of the CPU from the
                    # primaries, whatever its cost; the queue absorbs bursts, then drops.
                    spent = time.perf_counter() - began
                    if self._max_share < 1.0:
                        await asyncio.sleep(spent * (1.0 - self._max_share) / self._max_share)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                run.series.failed.inc()
                log.warning(
                    "shadow %s of %s alias %s failed: %s",
                    run.labels[3], run.labels[0], run.labels[1], exc,
                )  # fmt: skip

    async def _room(self) -> None:
        """Returns once the primaries leave room: none of the alias's requests in progress
        beyond the bound, and the event loop idle enough that a yield comes back within
        `idle_lag` (requests waiting in the loop's ready queue delay it; a tiny model's
        whole request runs inside one callback, so the in-progress count alone misses
        them). Meanwhile the queue fills and new shadow runs are dropped."""
        while True:
            await self._quiet.wait()
            before = time.perf_counter()
            await asyncio.sleep(0)
            if time.perf_counter() - before <= self._idle_lag and self._quiet.is_set():
                return
            await asyncio.sleep(BACKOFF_SECONDS)

    async def _run(self, run: _Run) -> None:
        assert self._infer is not None
        compared = compared_output(run.response.outputs)
        if compared is None:
            return
        run.request.outputs = [compared.name]
        tap = ServingTap()
        token = serving_tap.set(tap)
        started = time.perf_counter()
        try:
            response = await self._infer(run.request)
        finally:
            serving_tap.reset(token)
        latency = time.perf_counter() - started
        series = run.series
        primary_answers = answers(compared)
        shadow_answers = answers({o.name: o for o in response.outputs}[compared.name])
        same = agreeing(primary_answers, shadow_answers, self._tolerance)
        series.shadowed.inc()
        series.latency["primary"].observe(run.primary_latency)
        series.latency["shadow"].observe(latency)
        series.charge("primary", run.primary_tap)
        series.charge("shadow", tap)
        agree = int(same.sum())
        series.agree.inc(agree)
        series.disagree.inc(len(same) - agree)
        if self._window > 0:
            self._kept[run.request.id] = _Kept(run.labels, primary_answers, shadow_answers)
            while len(self._kept) > self._window:
                self._kept.popitem(last=False)

    def feedback(self, request_id: str, labels: list[str]) -> Feedback:
        """Counts each side's right answers against the true labels of a shadowed request
        (once: its answers are then forgotten)."""
        kept = self._kept.get(request_id)
        if kept is None:
            raise NotFound(
                f"no shadowed request {request_id!r} here: it was not sampled, its shadow has "
                "not answered yet, it is older than the feedback window, its feedback was "
                "already given, or (with --workers) another worker served it"
            )
        rows = len(kept.primary)
        if len(labels) != rows:
            raise InvalidArgument(
                f"request {request_id!r} had {rows} rows; feedback gives {len(labels)} labels"
            )
        del self._kept[request_id]
        truth = _truth(labels, kept.primary)
        right = {
            "primary": agreeing(kept.primary, truth, self._tolerance),
            "shadow": agreeing(kept.shadow, truth, self._tolerance),
        }
        for role, correct in right.items():
            count = int(correct.sum())
            self._metrics.shadow_feedback_rows.labels(*kept.labels, role, "true").inc(count)
            self._metrics.shadow_feedback_rows.labels(*kept.labels, role, "false").inc(rows - count)
        return Feedback(rows, int(right["primary"].sum()), int(right["shadow"].sum()))


def _truth(labels: list[str], like: np.ndarray) -> np.ndarray:
    """The true labels in the form the answers were kept in."""
    if like.dtype.kind == "f":
        try:
            return np.array([float(v) for v in labels], dtype=np.float64).reshape(like.shape)
        except ValueError as exc:
            raise InvalidArgument(f"a regressor's feedback must be numbers: {exc}") from exc
    if like.dtype.kind in "iu":  # compared on the most probable class's index
        raise InvalidArgument(
            "this request was compared on probabilities only (no label output was asked "
            "for): feedback needs the label output in the request"
        )
    return np.array(labels, dtype=object)


# ------------------------------------------------------------------------------ report


@dataclass
class RoleFigures:
    p50_seconds: float = 0.0
    p99_seconds: float = 0.0
    cost_per_1k: dict[str, float] = field(default_factory=dict)
    feedback_rows: int = 0
    correct_rows: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct_rows / self.feedback_rows if self.feedback_rows else 0.0


@dataclass
class PairReport:
    """An alias's figures against one shadow, for one primary version."""

    primary: str
    shadow: str
    sampled: int = 0
    shadowed: int = 0
    dropped: int = 0
    failed: int = 0
    agreeing_rows: int = 0
    compared_rows: int = 0
    roles: dict[str, RoleFigures] = field(
        default_factory=lambda: {role: RoleFigures() for role in ROLES}
    )

    @property
    def agreement(self) -> float:
        return self.agreeing_rows / self.compared_rows if self.compared_rows else 0.0


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """A quantile from cumulative histogram buckets (upper bound, count), interpolated
    linearly within its bucket as Prometheus' histogram_quantile does."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return 0.0
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, count
    return lower


def shadow_report(families: Iterable[Metric], name: str, alias: str) -> list[PairReport]:
    """The alias's pairs, summed from the metrics (one process's, or every worker's files)."""
    pairs: dict[tuple[str, str], PairReport] = {}
    buckets: dict[tuple[str, str, str], dict[float, float]] = {}
    costs: dict[tuple[str, str, str, str], float] = {}
    charged: dict[tuple[str, str, str], float] = {}

    def pair(labels: dict[str, str]) -> PairReport | None:
        if labels.get("model") != name or labels.get("alias") != alias:
            return None
        key = (labels.get("primary", ""), labels.get("shadow", ""))
        found = pairs.get(key)
        if found is None:
            found = pairs[key] = PairReport(primary=key[0], shadow=key[1])
        return found

    for family in families:
        if not family.name.startswith("paradigm_shadow_"):
            continue
        for sample in family.samples:
            found = pair(sample.labels)
            if found is None:
                continue
            labels, value = sample.labels, sample.value
            key = (found.primary, found.shadow, labels.get("role", ""))
            if sample.name == "paradigm_shadow_requests_total":
                outcome = labels.get("outcome", "")
                if outcome in ("sampled", "shadowed", "dropped", "failed"):
                    setattr(found, outcome, getattr(found, outcome) + round(value))
            elif sample.name == "paradigm_shadow_rows_total":
                found.compared_rows += round(value)
                if labels.get("agreement") == "agree":
                    found.agreeing_rows += round(value)
            elif sample.name == "paradigm_shadow_feedback_rows_total":
                figures = found.roles[labels["role"]]
                figures.feedback_rows += round(value)
                if labels.get("correct") == "true":
                    figures.correct_rows += round(value)
            elif sample.name == "paradigm_shadow_latency_seconds_bucket":
                bound = float(labels["le"])
                into = buckets.setdefault(key, {})
                into[bound] = into.get(bound, 0.0) + value
            elif sample.name == "paradigm_shadow_cost_total":
                unit_key = (*key, labels.get("unit", ""))
                costs[unit_key] = costs.get(unit_key, 0.0) + value
            elif sample.name == "paradigm_shadow_charged_rows_total":
                charged[key] = charged.get(key, 0.0) + value
    for (primary, shadow, role), by_bound in buckets.items():
        figures = pairs[(primary, shadow)].roles[role]
        cumulative = list(by_bound.items())
        figures.p50_seconds = quantile(cumulative, 0.5)
        figures.p99_seconds = quantile(cumulative, 0.99)
    for (primary, shadow, role, unit), spent in costs.items():
        rows = charged.get((primary, shadow, role), 0.0)
        pairs[(primary, shadow)].roles[role].cost_per_1k[unit] = (
            spent / rows * 1000.0 if rows else 0.0
        )
    return sorted(pairs.values(), key=lambda p: (p.primary, p.shadow))

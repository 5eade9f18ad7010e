"""Cascades on the data plane: calibrate a threshold, then serve a cascade like a model.

A cascade (service/registry/cascades.py) is a first model A and a second model B with the
same signature. A request to it runs A on every row; rows where A's top probability reaches
the threshold keep A's answer, the rest go through B in one batch, and B's answers are put
back in row order. The extra output ANSWERED_BY says, per row, which "model:version"
answered it.

`CascadePlane` stands in front of the DataPlane for every transport: a name that is a
cascade is served here, any other goes straight to the data plane. Every serving process
(each worker of `--workers N`) keeps the cascades in memory and re-reads their table when
its file changes (looked at, in a thread, at most once a second), so nothing on the
request path touches SQLite.

`calibrate` runs both models over held-out rows through the data plane (the real serving
path), prices each by probing it (service/serving/probe.py: the ledger's own charge), and
picks the threshold with `choose_threshold`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping, MutableSequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from service.cost.ledger import ServingTap, serving_tap
from service.errors import FailedPrecondition, InvalidArgument, NotFound
from service.metrics import Metrics, drop_gauge
from service.registry.aliases import LATEST
from service.registry.cascades import CASCADES_FILE, Cascade, CascadeStore, CurvePoint, StageCost
from service.registry.manifest import Manifest, TensorSpec
from service.serving.dataplane import DataPlane, ModelDescription
from service.serving.probe import probe_serving
from service.serving.shadow import ShadowRunner, label_text
from service.serving.tensors import InferInput, InferOutput, InferRequest, InferResponse

log = logging.getLogger(__name__)

#: The output that says which stage answered each row ("model:version", BYTES).
ANSWERED_BY = "answered_by"
PROBABILITIES = "probabilities"
#: A threshold above any probability: every row goes to B.
ALL_TO_THEN = 2.0
#: Most points kept of a calibration curve (one per distinct top probability otherwise).
CURVE_POINTS = 101
#: Requests per stage when pricing it, at PROBE_BATCH rows each.
PROBE_REQUESTS = 20
PROBE_BATCH = 64
REFRESH_SECONDS = 1.0
_FREE = StageCost(dollars_per_1k=0.0, device_seconds_per_1k=0.0, joules_per_1k=0.0, batch_size=0)
COST_UNITS = ("device_seconds", "joules", "dollars")


def stage(name: str, version: str) -> str:
    return f"{name}:{version}"


def check_pair(first: Manifest, then: Manifest) -> None:
    """InvalidArgument / FailedPrecondition unless A and B can form a cascade."""
    for manifest in (first, then):
        what = f"model {manifest.name!r} version {manifest.version}"
        if manifest.task != "classification" or not manifest.class_names:
            raise FailedPrecondition(
                f"{what} is not a classifier with named classes: a cascade escalates on the "
                "first model's top class probability"
            )
        outputs = {spec.name: spec for spec in manifest.outputs}
        if PROBABILITIES not in outputs:
            raise FailedPrecondition(f"{what} has no {PROBABILITIES!r} output to be sure by")
        tensors = [*manifest.inputs, *manifest.outputs]
        if not all(spec.shape and spec.shape[0] == -1 for spec in tensors):
            raise FailedPrecondition(
                f"{what} has a tensor without a batch axis: a cascade splits requests by row"
            )
    if _signature(first.inputs) != _signature(then.inputs):
        raise InvalidArgument(
            f"models {first.name!r} and {then.name!r} take different inputs: "
            f"{_describe(first.inputs)} vs {_describe(then.inputs)}"
        )
    if _signature(first.outputs) != _signature(then.outputs):
        raise InvalidArgument(
            f"models {first.name!r} and {then.name!r} answer different outputs: "
            f"{_describe(first.outputs)} vs {_describe(then.outputs)}"
        )
    if first.class_names != then.class_names:
        raise InvalidArgument(
            f"models {first.name!r} and {then.name!r} have different classes: "
            f"{first.class_names} vs {then.class_names}"
        )
    if first.name == then.name and first.version == then.version:
        raise InvalidArgument("a cascade needs two different models (or versions)")


def _signature(specs: list[TensorSpec]) -> list[tuple[str, str, tuple[int, ...]]]:
    return sorted((spec.name, spec.datatype, tuple(spec.shape)) for spec in specs)


def _describe(specs: list[TensorSpec]) -> str:
    return ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" for s in specs)


def calibration_curve(
    top: np.ndarray,
    first_right: np.ndarray,
    then_right: np.ndarray,
    first_cost: StageCost,
    then_cost: StageCost,
    same: np.ndarray | None = None,
) -> list[CurvePoint]:
    """The cascade at every distinct threshold: 0 (A answers all), each distinct top
    probability (rows below it escalate), and ALL_TO_THEN (B answers all). `same` marks the
    rows where A and B answer alike (the points' agreement with B)."""
    if same is None:
        same = first_right == then_right
    order = np.argsort(top, kind="stable")
    top_sorted = top[order]
    rows = len(top)
    # Escalating the k least sure rows: B's right answers among them, A's among the rest.
    then_cum = np.concatenate([[0], np.cumsum(then_right[order])])
    first_cum = np.concatenate([[0], np.cumsum(first_right[order])])
    same_cum = np.concatenate([[0], np.cumsum(same[order])])
    values, first_index = np.unique(top_sorted, return_index=True)
    thresholds = [0.0, *values.tolist(), ALL_TO_THEN]
    escalated_counts = [0, *first_index.tolist(), rows]
    points = []
    for threshold, k in zip(thresholds, escalated_counts, strict=True):
        share = k / rows
        right = then_cum[k] + (first_cum[rows] - first_cum[k])
        # Escalated rows get B's own answer; kept rows agree with B where A does.
        agreement = (k + same_cum[rows] - same_cum[k]) / rows
        points.append(
            _point(threshold, share, float(right) / rows, first_cost, then_cost, float(agreement))
        )
    return points


def _point(
    threshold: float,
    share: float,
    accuracy: float,
    first: StageCost,
    then: StageCost,
    agreement: float = 1.0,
) -> CurvePoint:
    return CurvePoint(
        threshold=float(threshold),
        escalated=share,
        accuracy=accuracy,
        dollars_per_1k=first.dollars_per_1k + share * then.dollars_per_1k,
        device_seconds_per_1k=first.device_seconds_per_1k + share * then.device_seconds_per_1k,
        joules_per_1k=first.joules_per_1k + share * then.joules_per_1k,
        agreement=agreement,
    )


def choose_threshold(
    curve: list[CurvePoint],
    *,
    target_accuracy: float = 0.0,
    max_dollars_per_1k: float = 0.0,
    within_then: float = -1.0,
) -> tuple[CurvePoint, bool]:
    """The point that reaches the target accuracy at the lowest cost, or the most accurate
    one within the cost cap; (point, met). Unmet: the most accurate point for a target, the
    cheapest for a cap. Ties go to the smaller escalated share.

    within_then >= 0 (the target is B's accuracy minus it) also asks that the cascade answer
    as B does on all but that share of rows: its accuracy then stays within that much of
    B's whatever the true labels, a bound that holds on new rows far better than the
    accuracies of two models measured on a few hundred (their gap swings by more than a
    few tenths of a percent from one sample to the next)."""
    if within_then >= 0:
        curve = [p for p in curve if p.agreement >= 1.0 - within_then - 1e-12] or curve[-1:]
    if max_dollars_per_1k > 0:
        within = [p for p in curve if p.dollars_per_1k <= max_dollars_per_1k]
        if not within:
            return min(curve, key=lambda p: (p.dollars_per_1k, p.escalated)), False
        return max(within, key=lambda p: (p.accuracy, -p.dollars_per_1k, -p.escalated)), True
    reaching = [p for p in curve if p.accuracy >= target_accuracy - 1e-12]
    if not reaching:
        return max(curve, key=lambda p: (p.accuracy, -p.dollars_per_1k)), False
    return min(reaching, key=lambda p: (p.dollars_per_1k, p.escalated, -p.accuracy)), True


def thin(curve: list[CurvePoint], keep: CurvePoint, most: int = CURVE_POINTS) -> list[CurvePoint]:
    """At most `most` points, evenly over the escalated share, the ends and `keep` kept."""
    if len(curve) <= most:
        return curve
    chosen = {0, len(curve) - 1, *np.linspace(0, len(curve) - 1, most - 1).astype(int).tolist()}
    kept = [curve[i] for i in sorted(chosen)]
    if keep not in kept:
        kept.append(keep)
        kept.sort(key=lambda p: p.threshold)
    return kept


@dataclass(frozen=True)
class Answers:
    """One model's answers on the calibration rows."""

    top: np.ndarray
    right: np.ndarray
    #: The class each row was given, as text.
    predicted: np.ndarray


async def _answers(
    dataplane: DataPlane,
    name: str,
    version: str,
    inputs: Mapping[str, np.ndarray],
    labels: np.ndarray,
    datatypes: Mapping[str, str],
) -> Answers:
    """Runs every row through the data plane, max_batch_size rows a request."""
    rows = len(labels)
    step = dataplane.max_batch_size
    tops: list[np.ndarray] = []
    predicted: list[str] = []
    for start in range(0, rows, step):
        request = InferRequest(
            model_name=name,
            model_version=version,
            inputs=[
                InferInput(key, datatypes[key], array[start : start + step])
                for key, array in inputs.items()
            ],
            outputs=["label", PROBABILITIES],
            id="cascade-calibration",
        )
        response = await dataplane.infer(request)
        out = {o.name: o.data for o in response.outputs}
        tops.append(np.asarray(out[PROBABILITIES], dtype=np.float64).max(axis=1))
        predicted.extend(label_text(value) for value in out["label"].reshape(-1).tolist())
    right = np.array([p == str(t) for p, t in zip(predicted, labels.tolist(), strict=True)])
    return Answers(np.concatenate(tops), right.astype(np.float64), np.array(predicted))


async def _price(
    dataplane: DataPlane, name: str, version: str, inputs: Mapping[str, np.ndarray]
) -> StageCost:
    probe = await probe_serving(
        dataplane, name, version, rows=inputs, requests=PROBE_REQUESTS, batch_sizes=(PROBE_BATCH,)
    )
    measure = probe.batches[0]
    return StageCost(
        dollars_per_1k=measure.dollars_per_1k,
        device_seconds_per_1k=measure.device_seconds_per_1k,
        joules_per_1k=measure.joules_per_1k,
        batch_size=measure.batch_size,
    )


async def calibrate(
    dataplane: DataPlane,
    *,
    name: str,
    first: Manifest,
    then: Manifest,
    inputs: Mapping[str, np.ndarray],
    labels: np.ndarray,
    target_accuracy: float = 0.0,
    accuracy_within_then: float = -1.0,
    max_dollars_per_1k: float = 0.0,
) -> Cascade:
    """A cascade (unnumbered) calibrated on these held-out rows.

    Half the rows (drawn with a fixed seed) choose the threshold; the other half, which the
    choice never saw, report how it does (Cascade.evaluation). With fewer than 20 rows all
    of them calibrate and there is no evaluation. `accuracy_within_then` >= 0 sets the
    target to B's calibration accuracy minus it."""
    unknown = sorted(set(labels.tolist()) - set(first.class_names))
    if unknown:
        raise FailedPrecondition(
            f"the calibration rows hold classes the models do not know: {unknown[:5]}"
        )
    datatypes = {spec.name: spec.datatype for spec in first.inputs}
    a = await _answers(dataplane, first.name, first.version, inputs, labels, datatypes)
    b = await _answers(dataplane, then.name, then.version, inputs, labels, datatypes)
    first_cost = await _price(dataplane, first.name, first.version, inputs)
    then_cost = await _price(dataplane, then.name, then.version, inputs)
    rows = len(labels)
    order = np.random.default_rng(0).permutation(rows)
    calibration = order[: rows // 2] if rows >= 20 else order
    held = order[rows // 2 :] if rows >= 20 else order[:0]
    full = calibration_curve(
        a.top[calibration], a.right[calibration], b.right[calibration], first_cost, then_cost,
        (a.predicted == b.predicted)[calibration],
    )  # fmt: skip
    # B alone costs B only; the curve's last point (every row escalated) pays for A too.
    first_alone = full[0]
    then_alone = _point(ALL_TO_THEN, 1.0, full[-1].accuracy, _FREE, then_cost)
    target = target_accuracy
    if accuracy_within_then >= 0:
        target = then_alone.accuracy - accuracy_within_then
    chosen, met = choose_threshold(
        full,
        target_accuracy=target,
        max_dollars_per_1k=max_dollars_per_1k,
        within_then=accuracy_within_then,
    )
    evaluation: dict[str, float] = {}
    if len(held):
        sure = a.top[held] >= chosen.threshold
        answered = np.where(sure, a.right[held], b.right[held])
        evaluation = {
            "rows": float(len(held)),
            "accuracy": float(answered.mean()),
            "escalated": float(1.0 - sure.mean()),
            "first_accuracy": float(a.right[held].mean()),
            "then_accuracy": float(b.right[held].mean()),
        }
        point = _point(chosen.threshold, evaluation["escalated"], 0.0, first_cost, then_cost)
        evaluation["dollars_per_1k"] = point.dollars_per_1k
        evaluation["device_seconds_per_1k"] = point.device_seconds_per_1k
        evaluation["joules_per_1k"] = point.joules_per_1k
    return Cascade(
        name=name,
        version="",
        first=first.name,
        first_version=first.version,
        then=then.name,
        then_version=then.version,
        target_accuracy=target if max_dollars_per_1k <= 0 else 0.0,
        max_dollars_per_1k=max_dollars_per_1k,
        accuracy_within_then=accuracy_within_then,
        threshold=chosen.threshold,
        target_met=met,
        dataset=first.dataset,
        calibration_rows=len(calibration),
        chosen=chosen,
        first_alone=first_alone,
        then_alone=then_alone,
        first_cost=first_cost,
        then_cost=then_cost,
        curve=thin(full, chosen),
        evaluation=evaluation,
    )


class CascadePlane:
    """Serves cascades by name and passes every other name to the data plane."""

    def __init__(
        self, dataplane: DataPlane, store: CascadeStore, metrics: Metrics, data_dir: Path
    ) -> None:
        self._dataplane = dataplane
        self._store = store
        self._metrics = metrics
        self._file = data_dir / CASCADES_FILE
        self._by_name: dict[str, list[Cascade]] = {}
        #: name -> {alias: version}; replaced whole, never mutated in place.
        self._aliases: dict[str, dict[str, str]] = {}
        self._stamp: tuple[int, int] | None = None
        self._looked = 0.0
        self._refreshing: asyncio.Task[None] | None = None
        # `--workers N`: the owner's shared change counter, bumped after each change it
        # makes (announce), and the last value this follower saw of it.
        self._generation: MutableSequence[int] | None = None
        self._owner = False
        self._seen = 0
        #: Aliases' shadows (service/serving/shadow.py), when the app runs them.
        self.shadows: ShadowRunner | None = None
        self._publish(store.all(), store.aliases())

    def follow(self, generation: MutableSequence[int], *, owner: bool) -> None:
        """Shares changes with the other workers through their shared counter: the owner
        bumps it after a change, the others re-read the table before serving once it moved."""
        self._generation = generation
        self._owner = owner
        self._seen = generation[0]

    @property
    def dataplane(self) -> DataPlane:
        return self._dataplane

    def reload(self) -> None:
        """Re-reads the table now (after this process changed it) and tells the others."""
        self._publish(self._store.all(), self._store.aliases())
        if self._generation is not None and self._owner:
            self._generation[0] += 1

    def _behind(self) -> bool:
        """Whether this follower has not yet seen the owner's latest change (a read of
        shared memory: every request asks)."""
        generation = self._generation
        return generation is not None and not self._owner and generation[0] != self._seen

    async def _catch_up(self) -> None:
        """A follower re-reads the table before serving when the owner changed it."""
        assert self._generation is not None
        self._seen = self._generation[0]
        await self._refresh(force=True)

    def _publish(self, cascades: list[Cascade], aliases: dict[str, dict[str, str]]) -> None:
        self._aliases = aliases
        by_name: dict[str, list[Cascade]] = {}
        for cascade in cascades:
            by_name.setdefault(cascade.name, []).append(cascade)
        kept = {(c.name, c.version) for c in cascades}
        gone = [
            c for versions in self._by_name.values() for c in versions
            if (c.name, c.version) not in kept
        ]  # fmt: skip
        self._by_name = by_name
        for cascade in cascades:
            labels = self._labels(cascade)
            self._metrics.cascade_threshold.labels(*labels).set(cascade.threshold)
            self._metrics.cascade_calibrated_escalation.labels(*labels).set(
                cascade.chosen.escalated
            )
        for cascade in gone:
            drop_gauge(self._metrics.cascade_threshold, *self._labels(cascade))
            drop_gauge(self._metrics.cascade_calibrated_escalation, *self._labels(cascade))

    def _stat(self) -> tuple[int, int] | None:
        try:
            info = self._file.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size)

    async def _refresh(self, *, force: bool = False) -> bool:
        """Re-reads the table if its file changed (or when forced); whether it did."""
        stamp = await asyncio.to_thread(self._stat)
        if stamp == self._stamp and not force:
            return False
        cascades = await asyncio.to_thread(self._store.all)
        aliases = await asyncio.to_thread(self._store.aliases)
        self._stamp = stamp
        self._publish(cascades, aliases)
        return True

    async def _find_now(self, name: str, version: str) -> Cascade | None:
        """find(), after re-reading the table if it changed: for a name (or version) that
        was not found, since another worker may have created it a moment ago."""
        await self._refresh()
        return self.find(name, version)

    def _maybe_refresh(self) -> None:
        """Looks at the table's file at most once a second, off the request's path."""
        now = time.monotonic()
        if now - self._looked < REFRESH_SECONDS or self._refreshing is not None:
            return
        self._looked = now

        async def refresh() -> None:
            try:
                await self._refresh()
            except Exception as exc:  # a busy or locked file: look again next time
                log.warning("could not re-read the cascades: %s", exc)
            finally:
                self._refreshing = None

        self._refreshing = asyncio.get_running_loop().create_task(refresh())

    def find(self, name: str, version: str = "") -> Cascade | None:
        """The cascade version a name (and version) means; None if the name is no cascade."""
        self._maybe_refresh()
        versions = self._by_name.get(name)
        if not versions:
            return None
        if not version or version == LATEST:
            return versions[-1]
        for cascade in versions:
            if cascade.version == version:
                return cascade
        if version.isdigit():  # "007" is version 7, as for models
            version = str(int(version))
        else:
            version = self._aliases.get(name, {}).get(version, version)
        for cascade in versions:
            if cascade.version == version:
                return cascade
        raise NotFound(
            f"cascade {name!r} has no version {version!r}; it has {[c.version for c in versions]}"
        )

    async def infer(self, request: InferRequest) -> InferResponse:
        name, version = request.model_name, request.model_version
        if self._behind():
            await self._catch_up()
        try:
            cascade = self.find(name, version)
            if cascade is None:
                shadows = self.shadows
                if shadows is None or not request.model_version:
                    return await self._dataplane.infer(request)
                shadow = await shadows.shadow_for(request)
                if shadow is None:
                    return await self._dataplane.infer(request)
                return await shadows.serve(shadow, request, self._dataplane.infer)
        except NotFound:
            cascade = await self._find_now(name, version)
            if cascade is None:
                raise
        return await self._infer_cascade(cascade, request)

    async def ready(self, name: str, version: str = "") -> bool:
        if self._behind():
            await self._catch_up()
        try:
            cascade = self.find(name, version)
        except NotFound:
            cascade = None
        if cascade is None:
            if await self._dataplane.ready(name, version):
                return True
            try:
                cascade = await self._find_now(name, version)
            except NotFound:
                return False
            if cascade is None:
                return False
        return await self._dataplane.ready(
            cascade.first, cascade.first_version
        ) and await self._dataplane.ready(cascade.then, cascade.then_version)

    async def describe(self, name: str, version: str = "") -> ModelDescription:
        if self._behind():
            await self._catch_up()
        try:
            cascade = self.find(name, version)
            if cascade is None:
                return await self._dataplane.describe(name, version)
        except NotFound:
            cascade = await self._find_now(name, version)
            if cascade is None:
                raise
        first = await self._dataplane.describe(cascade.first, cascade.first_version)
        rows = first.outputs[0].shape[0] if first.outputs else -1
        return replace(
            first,
            name=cascade.name,
            version=cascade.version,
            versions=[c.version for c in self._by_name.get(cascade.name, [])],
            outputs=[*first.outputs, TensorSpec(ANSWERED_BY, "BYTES", (rows,))],
            parameters={
                **first.parameters,
                "paradigm": "cascade",
                "algorithm": "cascade",
                "version": cascade.version,
                "cascade_first": stage(cascade.first, cascade.first_version),
                "cascade_then": stage(cascade.then, cascade.then_version),
                "cascade_threshold": repr(cascade.threshold),
            },
        )

    def _labels(self, cascade: Cascade) -> tuple[str, str, str, str]:
        return (
            cascade.name,
            cascade.version,
            stage(cascade.first, cascade.first_version),
            stage(cascade.then, cascade.then_version),
        )

    async def _infer_cascade(self, cascade: Cascade, request: InferRequest) -> InferResponse:
        wanted = list(request.outputs)
        inner = [name for name in wanted if name != ANSWERED_BY]
        if wanted and PROBABILITIES not in inner:
            inner.append(PROBABILITIES)
        tap = ServingTap()
        token = serving_tap.set(tap)
        try:
            first = await self._dataplane.infer(
                replace_request(request, cascade.first, cascade.first_version, inner)
            )
            outputs = {o.name: o for o in first.outputs}
            top = np.asarray(outputs[PROBABILITIES].data).max(axis=1)
            unsure = np.flatnonzero(top < cascade.threshold)
            rows = len(top)
            if len(unsure):
                escalated = [InferInput(t.name, t.datatype, t.data[unsure]) for t in request.inputs]
                then = await self._dataplane.infer(
                    replace_request(
                        request, cascade.then, cascade.then_version, inner, inputs=escalated
                    )
                )
                for output in then.outputs:
                    merged = outputs[output.name].data.copy()
                    merged[unsure] = output.data
                    outputs[output.name] = InferOutput(output.name, output.datatype, merged)
        finally:
            serving_tap.reset(token)
        answered = np.full(rows, stage(cascade.first, cascade.first_version), dtype=object)
        answered[unsure] = stage(cascade.then, cascade.then_version)
        outputs[ANSWERED_BY] = InferOutput(ANSWERED_BY, "BYTES", answered)
        names = wanted or [*(o.name for o in first.outputs), ANSWERED_BY]
        self._count(cascade, rows, len(unsure), tap)
        return InferResponse(
            model_name=cascade.name,
            model_version=cascade.version,
            outputs=[outputs[name] for name in names],
            id=request.id,
            parameters={
                **first.parameters,
                "cascade_escalated": str(len(unsure)),
                "cascade_threshold": repr(cascade.threshold),
            },
        )

    def _count(self, cascade: Cascade, rows: int, escalated: int, tap: ServingTap) -> None:
        metrics = self._metrics
        labels = self._labels(cascade)
        metrics.cascade_requests.labels(*labels).inc()
        metrics.cascade_rows.labels(*labels, "first").inc(rows - escalated)
        metrics.cascade_rows.labels(*labels, "then").inc(escalated)
        spent = {
            "device_seconds": tap.charge.device_seconds,
            "joules": tap.charge.joules,
            "dollars": tap.charge.dollars,
        }
        first, then = cascade.first_cost, cascade.then_cost
        per_row = {
            "device_seconds": (first.device_seconds_per_1k, then.device_seconds_per_1k),
            "joules": (first.joules_per_1k, then.joules_per_1k),
            "dollars": (first.dollars_per_1k, then.dollars_per_1k),
        }
        for unit in COST_UNITS:
            metrics.cascade_cost.labels(*labels, unit).inc(spent[unit])
            a, b = (value / 1000.0 for value in per_row[unit])
            alone = rows * b
            metrics.cascade_then_alone_cost.labels(*labels, unit).inc(alone)
            saved = alone - rows * a - escalated * b
            # A counter only rises: a request that cost more than B alone adds nothing
            # (inc(0) still makes the series, so its panel has data from the start).
            metrics.cascade_saved.labels(*labels, unit).inc(
                saved if saved > 0 and math.isfinite(saved) else 0.0
            )


def replace_request(
    request: InferRequest,
    name: str,
    version: str,
    outputs: list[str],
    inputs: list[InferInput] | None = None,
) -> InferRequest:
    """The request, for one stage of the cascade."""
    return InferRequest(
        model_name=name,
        model_version=version,
        inputs=request.inputs if inputs is None else inputs,
        outputs=outputs,
        id=request.id,
        arrived=request.arrived,
        deadline=request.deadline,
    )

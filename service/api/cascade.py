"""paradigm.v1.CascadeService: create, list, show, recalibrate and delete cascades.

Creating one checks both models, fetches the held-out rows neither was trained on (a
worker reads them: service/training/calibration_rows.py), calibrates the threshold on the
data plane (service/serving/cascade.py) and stores the result (service/registry/cascades.py).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, TypeAlias

import grpc.aio

from service.api import convert
from service.api.codec import check_strings
from service.api.paradigm import ModelServicer
from service.datasets import layout
from service.datasets.store import DatasetStore
from service.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from service.gen.paradigm.v1 import paradigm_pb2_grpc as pb_grpc
from service.registry.aliases import AliasEvent, validate_alias
from service.registry.cascades import Cascade, CascadeStore, CurvePoint, StageCost
from service.registry.manifest import Manifest
from service.registry.store import ModelRegistry, check_version, validate_model_name
from service.serving.cascade import CascadePlane, calibrate, check_pair
from service.training.calibration_rows import held_out_rows

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
DEFAULT_ROWS = 5000
MAX_ROWS = 100_000
#: Seconds the calibration worker may take to read the rows.
ROWS_TIMEOUT = 300.0


def _goal(goal: pb.CascadeGoal) -> dict[str, float]:
    """The goal as calibrate() takes it; InvalidArgument when unset or out of range."""
    which = goal.WhichOneof("goal")
    if which is None:
        raise InvalidArgument(
            "a cascade needs a goal: target_accuracy, max_dollars_per_1k or accuracy_within_then"
        )
    value = getattr(goal, which)
    if which == "target_accuracy" and not 0.0 < value <= 1.0:
        raise InvalidArgument(f"target_accuracy {value} must be in (0, 1]")
    if which == "max_dollars_per_1k" and not value > 0.0:
        raise InvalidArgument(f"max_dollars_per_1k {value} must be above 0")
    if which == "accuracy_within_then" and not 0.0 <= value < 1.0:
        raise InvalidArgument(f"accuracy_within_then {value} must be in [0, 1)")
    return {which: value}


def _max_rows(value: int) -> int:
    if value > MAX_ROWS:
        raise InvalidArgument(f"max_rows {value} must be at most {MAX_ROWS} (0 means 5 000)")
    return value or DEFAULT_ROWS


def _split(reference: str, what: str) -> tuple[str, str]:
    if not reference:
        raise InvalidArgument(f"{what} must name a model: NAME or NAME:VERSION")
    name, _, version = reference.partition(":")
    check_version(name, version)
    return name, version


def _point(point: CurvePoint) -> pb.CascadePoint:
    return pb.CascadePoint(**point.__dict__)


def _cost(cost: StageCost) -> pb.CascadeStageCost:
    return pb.CascadeStageCost(**cost.__dict__)


def to_proto(cascade: Cascade, *, curve: bool = True) -> pb.Cascade:
    return pb.Cascade(
        name=cascade.name,
        version=cascade.version,
        first=cascade.first,
        first_version=cascade.first_version,
        then=cascade.then,
        then_version=cascade.then_version,
        target_accuracy=cascade.target_accuracy,
        max_dollars_per_1k=cascade.max_dollars_per_1k,
        threshold=cascade.threshold,
        target_met=cascade.target_met,
        dataset=cascade.dataset,
        calibration_rows=cascade.calibration_rows,
        chosen=_point(cascade.chosen),
        first_alone=_point(cascade.first_alone),
        then_alone=_point(cascade.then_alone),
        first_cost=_cost(cascade.first_cost),
        then_cost=_cost(cascade.then_cost),
        curve=[_point(p) for p in cascade.curve] if curve else [],
        evaluation=cascade.evaluation,
        created_at=convert.timestamp(cascade.created_at),
        accuracy_within_then=cascade.accuracy_within_then,
    )


class CascadeServicer(pb_grpc.CascadeServiceServicer):
    def __init__(
        self,
        registry: ModelRegistry,
        datasets: DatasetStore,
        store: CascadeStore,
        plane: CascadePlane,
        *,
        blas_threads: int = 1,
    ) -> None:
        self._registry = registry
        self._datasets = datasets
        self._store = store
        self._plane = plane
        self._blas_threads = blas_threads
        # One calibration at a time: each runs two models over thousands of rows.
        self._slot = asyncio.Semaphore(1)

    async def CreateCascade(self, request: pb.CreateCascadeRequest, context: Context) -> pb.Cascade:
        check_strings(request)
        name = validate_model_name(request.name)
        goal = _goal(request.goal)
        max_rows = _max_rows(request.max_rows)
        first = await self._manifest(*_split(request.first, "first"))
        then = await self._manifest(*_split(request.then, "then"))
        if await self._is_model(name):
            raise AlreadyExists(
                f"{name!r} is a model's name; a cascade is served under its own name"
            )
        cascade = await self._calibrate(name, first, then, goal, max_rows)
        return to_proto(cascade)

    async def RecalibrateCascade(
        self, request: pb.RecalibrateCascadeRequest, context: Context
    ) -> pb.Cascade:
        check_strings(request)
        current = await asyncio.to_thread(self._store.get, request.name)
        if request.HasField("goal"):
            goal = _goal(request.goal)
        elif current.accuracy_within_then >= 0:
            goal = {"accuracy_within_then": current.accuracy_within_then}
        elif current.max_dollars_per_1k > 0:
            goal = {"max_dollars_per_1k": current.max_dollars_per_1k}
        else:
            goal = {"target_accuracy": current.target_accuracy}
        first = await self._manifest(current.first, current.first_version)
        then = await self._manifest(current.then, current.then_version)
        cascade = await self._calibrate(
            current.name, first, then, goal, _max_rows(request.max_rows)
        )
        return to_proto(cascade)

    async def GetCascade(self, request: pb.GetCascadeRequest, context: Context) -> pb.Cascade:
        check_strings(request)
        return to_proto(await asyncio.to_thread(self._store.get, request.name, request.version))

    async def ListCascades(
        self, request: pb.ListCascadesRequest, context: Context
    ) -> pb.ListCascadesResponse:
        check_strings(request)
        cascades = await asyncio.to_thread(self._store.all)
        if request.name:
            cascades = [c for c in cascades if c.name == request.name]
        return pb.ListCascadesResponse(cascades=[to_proto(c, curve=False) for c in cascades])

    async def DeleteCascade(
        self, request: pb.DeleteCascadeRequest, context: Context
    ) -> pb.DeleteCascadeResponse:
        check_strings(request)
        deleted = await asyncio.to_thread(self._store.delete, request.name, request.version)
        await asyncio.to_thread(self._plane.reload)
        return pb.DeleteCascadeResponse(deleted_versions=deleted)

    async def _manifest(self, name: str, version: str) -> Manifest:
        return await asyncio.to_thread(self._registry.get, name, version)

    async def _is_model(self, name: str) -> bool:
        try:
            await asyncio.to_thread(self._registry.get, name, "")
        except NotFound:
            return False
        return True

    async def _calibrate(
        self, name: str, first: Manifest, then: Manifest, goal: dict[str, float], max_rows: int
    ) -> Cascade:
        check_pair(first, then)
        dataset_dir = self._dataset(first, then)
        async with self._slot:
            rows = await held_out_rows(
                dataset_dir,
                split_seed=first.split_seed,
                test_fraction=first.test_fraction,
                inputs=[spec.name for spec in first.inputs],
                max_rows=max_rows,
                timeout=ROWS_TIMEOUT,
                blas_threads=self._blas_threads,
            )
            if len(rows) < 2:
                raise FailedPrecondition(
                    f"{len(rows)} held-out rows to calibrate on: a cascade needs at least 2"
                )
            cascade = await calibrate(
                self._plane.dataplane,
                name=name,
                first=first,
                then=then,
                inputs=rows.inputs,
                labels=rows.labels,
                **goal,
            )
        stored = await asyncio.to_thread(self._store.add, cascade)
        await asyncio.to_thread(self._plane.reload)
        return stored

    def _dataset(self, first: Manifest, then: Manifest) -> Any:
        """The dataset both models were trained on, if its held-out rows are known and the
        same for both (same data, split seed and fraction)."""
        pair = f"models {first.name!r} and {then.name!r}"
        if not first.dataset or not then.dataset:
            raise FailedPrecondition(
                f"{pair}: a cascade calibrates on the held-out rows of the models' training "
                "dataset, and an imported model has none"
            )
        if first.dataset != then.dataset or first.dataset_fingerprint != then.dataset_fingerprint:
            raise FailedPrecondition(
                f"{pair} were trained on different data ({first.dataset!r} and "
                f"{then.dataset!r}): a cascade calibrates on rows neither was trained on"
            )
        if first.test_fraction <= 0 or then.test_fraction <= 0:
            raise FailedPrecondition(f"{pair}: no held-out split is recorded to calibrate on")
        if (first.split_seed, first.test_fraction) != (then.split_seed, then.test_fraction):
            raise FailedPrecondition(
                f"{pair} were split differently (seed {first.split_seed} / "
                f"{then.split_seed}, test fraction {first.test_fraction} / "
                f"{then.test_fraction}): one model's held-out rows are the other's training "
                "rows; train both with the same seed and test_fraction"
            )
        dataset_dir = self._datasets.path(first.dataset)
        info = layout.read_info(dataset_dir)
        if first.dataset_fingerprint and info.fingerprint != first.dataset_fingerprint:
            raise FailedPrecondition(
                f"dataset {first.dataset!r} changed since {pair} were trained on it"
            )
        return dataset_dir


class CascadeAliasing(ModelServicer):
    """ModelService, with SetAlias / DeleteAlias on a cascade's name aliasing its versions
    (kept in the cascades' own table, served by every worker's CascadePlane); every other
    name is a model's, handled as before."""

    def __init__(
        self, *args: Any, cascades: CascadeStore, plane: CascadePlane, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._cascades = cascades
        self._cascade_plane = plane

    def _is_cascade(self, name: str) -> bool:
        try:
            return self._cascade_plane.find(name) is not None
        except NotFound:
            return False

    async def SetAlias(self, request: pb.SetAliasRequest, context: Context) -> pb.AliasChange:
        if not self._is_cascade(request.name):
            return await super().SetAlias(request, context)
        check_strings(request)
        validate_alias(request.alias)
        if request.HasField("gates") and request.gates.ListFields():
            raise InvalidArgument(
                "promotion gates compare models; a cascade's alias is set without gates "
                "(its versions carry their own calibration)"
            )
        version, previous, at = await asyncio.to_thread(
            self._cascades.set_alias, request.name, request.alias, request.version
        )
        await asyncio.to_thread(self._cascade_plane.reload)
        evidence = {"cascade": True, **({"note": request.note} if request.note else {})}
        return convert.alias_change_to_proto(
            AliasEvent(request.name, request.alias, version, previous, at, evidence)
        )

    async def DeleteAlias(self, request: pb.DeleteAliasRequest, context: Context) -> pb.AliasChange:
        if not self._is_cascade(request.name):
            return await super().DeleteAlias(request, context)
        check_strings(request)
        validate_alias(request.alias)
        previous = await asyncio.to_thread(self._cascades.delete_alias, request.name, request.alias)
        if previous is None:
            raise NotFound(f"cascade {request.name!r} has no alias {request.alias!r}")
        await asyncio.to_thread(self._cascade_plane.reload)
        at = datetime.now(UTC).isoformat()
        evidence = {"cascade": True, "reason": request.note or "removed"}
        return convert.alias_change_to_proto(
            AliasEvent(request.name, request.alias, "", previous, at, evidence)
        )

    async def ListAliases(
        self, request: pb.ListAliasesRequest, context: Context
    ) -> pb.ListAliasesResponse:
        if not request.name or not self._is_cascade(request.name):
            return await super().ListAliases(request, context)
        check_strings(request)
        aliases = (await asyncio.to_thread(self._cascades.aliases)).get(request.name, {})
        return pb.ListAliasesResponse(
            aliases=[
                pb.ModelAlias(name=request.name, alias=alias, version=version)
                for alias, version in sorted(aliases.items())
                if not request.alias or alias == request.alias
            ]
        )

"""paradigm.v1.ShadowService: an alias's shadow model, its report, and feedback.

The shadow is stored with the alias in the registry's metadata (SQLite or PostgreSQL), so
every worker and replica serving the alias shadows it. The report is summed from the
metrics (every worker's files with `--workers N`); feedback is matched against the answers
this process (the job owner, which the control plane is forwarded to) kept.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

import grpc.aio
from prometheus_client.core import Metric

from service.api import convert
from service.api.codec import check_strings
from service.errors import InvalidArgument
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from service.gen.paradigm.v1 import paradigm_pb2_grpc as pb_grpc
from service.registry.aliases import Shadow, validate_alias
from service.registry.store import ModelRegistry, check_version, validate_model_name
from service.serving.shadow import PairReport, RoleFigures, ShadowRunner, shadow_report

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
#: Most labels one SubmitFeedback may carry (one per row of a request).
MAX_FEEDBACK_ROWS = 1_000_000


def config_to_proto(shadow: Shadow) -> pb.ShadowConfig:
    return pb.ShadowConfig(
        name=shadow.name,
        alias=shadow.alias,
        shadow_model=shadow.shadow,
        shadow_version=shadow.shadow_version,
        sample_rate=shadow.sample_rate,
        updated_at=convert.timestamp(shadow.updated_at),
    )


def _role(figures: RoleFigures) -> pb.ShadowRoleFigures:
    return pb.ShadowRoleFigures(
        p50_seconds=figures.p50_seconds,
        p99_seconds=figures.p99_seconds,
        cost_per_1k=figures.cost_per_1k,
        feedback_rows=figures.feedback_rows,
        correct_rows=figures.correct_rows,
        accuracy=figures.accuracy,
    )


def pair_to_proto(pair: PairReport) -> pb.ShadowPair:
    return pb.ShadowPair(
        primary=pair.primary,
        shadow=pair.shadow,
        sampled=pair.sampled,
        shadowed=pair.shadowed,
        dropped=pair.dropped,
        failed=pair.failed,
        compared_rows=pair.compared_rows,
        agreeing_rows=pair.agreeing_rows,
        agreement=pair.agreement,
        primary_figures=_role(pair.roles["primary"]),
        shadow_figures=_role(pair.roles["shadow"]),
    )


class ShadowServicer(pb_grpc.ShadowServiceServicer):
    def __init__(
        self,
        registry: ModelRegistry,
        runner: ShadowRunner,
        metric_families: Callable[[], Iterable[Metric]],
    ) -> None:
        self._registry = registry
        self._runner = runner
        self._families = metric_families

    async def SetShadow(self, request: pb.SetShadowRequest, context: Context) -> pb.ShadowConfig:
        check_strings(request)
        validate_model_name(request.name)
        validate_alias(request.alias)
        if not request.shadow_model:
            raise InvalidArgument("name the shadow model (shadow_model)")
        validate_model_name(request.shadow_model)
        if request.shadow_version:
            check_version(request.shadow_model, request.shadow_version)
        rate = request.sample_rate
        if not (math.isfinite(rate) and 0.0 < rate <= 1.0):
            raise InvalidArgument(f"sample_rate must be in (0, 1], not {rate}")
        shadow = Shadow(
            name=request.name,
            alias=request.alias,
            shadow=request.shadow_model,
            shadow_version=request.shadow_version,
            sample_rate=rate,
        )
        stored = await asyncio.to_thread(self._registry.set_shadow, shadow)
        return config_to_proto(stored)

    async def ClearShadow(
        self, request: pb.ClearShadowRequest, context: Context
    ) -> pb.ClearShadowResponse:
        check_strings(request)
        validate_model_name(request.name)
        validate_alias(request.alias)
        await asyncio.to_thread(self._registry.clear_shadow, request.name, request.alias)
        return pb.ClearShadowResponse()

    async def ListShadows(
        self, request: pb.ListShadowsRequest, context: Context
    ) -> pb.ListShadowsResponse:
        check_strings(request)
        shadows = [
            s for s in self._registry.shadows() if not request.name or s.name == request.name
        ]
        return pb.ListShadowsResponse(shadows=[config_to_proto(s) for s in shadows])

    async def GetShadowReport(
        self, request: pb.GetShadowReportRequest, context: Context
    ) -> pb.ShadowReport:
        check_strings(request)
        validate_model_name(request.name)
        validate_alias(request.alias)
        pairs = await asyncio.to_thread(
            lambda: shadow_report(list(self._families()), request.name, request.alias)
        )
        current = self._registry.shadow_of(request.name, request.alias)
        if current is None and not pairs:
            # Neither shadowed now nor ever seen: an unknown alias is NOT_FOUND.
            await asyncio.to_thread(self._registry.get, request.name, request.alias)
        return pb.ShadowReport(
            name=request.name,
            alias=request.alias,
            shadow=config_to_proto(current) if current is not None else None,
            pairs=[pair_to_proto(p) for p in pairs],
        )

    async def SubmitFeedback(
        self, request: pb.SubmitFeedbackRequest, context: Context
    ) -> pb.SubmitFeedbackResponse:
        check_strings(request)
        if not request.request_id:
            raise InvalidArgument("request_id is required")
        if not request.labels:
            raise InvalidArgument("labels are required: the true label of each row")
        if len(request.labels) > MAX_FEEDBACK_ROWS:
            raise InvalidArgument(f"at most {MAX_FEEDBACK_ROWS} labels")
        result = self._runner.feedback(request.request_id, list(request.labels))
        return pb.SubmitFeedbackResponse(
            rows=result.rows,
            primary_correct=result.primary_correct,
            shadow_correct=result.shadow_correct,
        )

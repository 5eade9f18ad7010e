"""paradigm.v1.CostService: the cost report, per model version and per paradigm."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, TypeAlias

import grpc.aio

from service.api.codec import check_strings
from service.api.convert import PARADIGMS, cost_to_proto, timestamp
from service.cost.ledger import Charge, CostLedger
from service.cost.report import build_report, per_thousand
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from service.gen.paradigm.v1 import paradigm_pb2_grpc as pb_grpc
from service.registry.store import ModelRegistry

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


def _serving(charge: Charge, predictions: int, requests: int) -> pb.ServingCost:
    return pb.ServingCost(
        predictions=predictions,
        requests=requests,
        total=cost_to_proto(charge),
        per_1k_predictions=cost_to_proto(per_thousand(charge, predictions)),
    )


class CostServicer(pb_grpc.CostServiceServicer):
    def __init__(
        self,
        ledger: CostLedger,
        registry: ModelRegistry,
        started_at: datetime,
        prices: dict[str, float],
    ) -> None:
        self._ledger = ledger
        self._registry = registry
        self._started_at = started_at
        self._prices = prices

    async def GetCostReport(
        self, request: pb.GetCostReportRequest, context: Context
    ) -> pb.CostReport:
        check_strings(request)
        manifests = await asyncio.to_thread(self._registry.manifests, request.model_name)
        models, paradigms = build_report(self._ledger, manifests, request.model_name)
        return pb.CostReport(
            models=[
                pb.ModelCost(
                    name=line.name,
                    version=line.version,
                    paradigm=PARADIGMS.get(line.paradigm, pb.PARADIGM_UNSPECIFIED),
                    algorithm=line.algorithm,
                    device=line.device,
                    serving=_serving(line.serving, line.predictions, line.requests),
                    training=cost_to_proto(line.training),
                    training_device=line.training_device,
                )
                for line in models
            ],
            paradigms=[
                pb.ParadigmCost(
                    paradigm=PARADIGMS.get(group.paradigm, pb.PARADIGM_UNSPECIFIED),
                    device=group.device,
                    serving=_serving(group.serving, group.predictions, group.requests),
                    training=cost_to_proto(group.training),
                    models=group.models,
                )
                for group in paradigms
            ],
            serving_since=timestamp(self._started_at),
            price_per_device_hour=self._prices,
        )

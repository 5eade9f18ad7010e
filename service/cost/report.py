"""The cost report: serving totals from the ledger, training costs from the manifests."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.cost.ledger import Charge, CostLedger, ServingTotals
from service.registry.manifest import Manifest


@dataclass
class ModelCostLine:
    """One model version: what serving it has cost since start, and what training cost."""

    name: str
    version: str
    paradigm: str
    algorithm: str
    device: str = ""
    predictions: int = 0
    requests: int = 0
    serving: Charge = field(default_factory=Charge)
    training: Charge = field(default_factory=Charge)
    training_device: str = ""


@dataclass
class ParadigmCostLine:
    """One paradigm on one device, summed over its model versions."""

    paradigm: str
    device: str
    models: int = 0
    predictions: int = 0
    requests: int = 0
    serving: Charge = field(default_factory=Charge)
    training: Charge = field(default_factory=Charge)


def per_thousand(charge: Charge, predictions: int) -> Charge:
    if predictions <= 0:
        return Charge(energy_source=charge.energy_source)
    scale = 1000.0 / predictions
    return Charge(
        charge.device_seconds * scale, charge.joules * scale, charge.dollars * scale,
        charge.energy_source,
    )  # fmt: skip


def training_charge(manifest: Manifest) -> Charge:
    cost = manifest.training_cost
    return Charge(
        device_seconds=float(cost.get("cpu_seconds", 0.0)) + float(cost.get("gpu_seconds", 0.0)),
        joules=float(cost.get("joules", 0.0)),
        dollars=float(cost.get("dollars", 0.0)),
        energy_source=str(cost.get("energy_source", "")),
    )


def build_report(
    ledger: CostLedger, manifests: list[Manifest], model_name: str = ""
) -> tuple[list[ModelCostLine], list[ParadigmCostLine]]:
    lines: dict[tuple[str, str], ModelCostLine] = {}
    for manifest in manifests:
        lines[(manifest.name, manifest.version)] = ModelCostLine(
            name=manifest.name,
            version=manifest.version,
            paradigm=manifest.paradigm,
            algorithm=manifest.algorithm,
            training=training_charge(manifest),
            training_device=manifest.training_device or "cpu",
        )
    totals: list[ServingTotals] = ledger.serving_totals()
    for served in totals:
        if model_name and served.model != model_name:
            continue
        # Deleted versions keep their line: what serving them cost was still spent.
        line = lines.setdefault(
            (served.model, served.version),
            ModelCostLine(served.model, served.version, served.paradigm, served.algorithm),
        )
        line.device = served.device
        line.predictions = served.predictions
        line.requests = served.requests
        line.serving = served.charge or Charge()

    groups: dict[tuple[str, str], ParadigmCostLine] = {}
    for line in lines.values():
        if line.device:
            group = groups.setdefault(
                (line.paradigm, line.device), ParadigmCostLine(line.paradigm, line.device)
            )
            group.predictions += line.predictions
            group.requests += line.requests
            group.serving.add(line.serving)
            group.models += 1
        if line.training.device_seconds:
            device = line.training_device or "cpu"
            group = groups.setdefault(
                (line.paradigm, device), ParadigmCostLine(line.paradigm, device)
            )
            group.training.add(line.training)
            if not line.device or line.device != device:
                group.models += 1
    ordered = sorted(lines.values(), key=lambda line: (line.name, int(line.version or 0)))
    return ordered, sorted(groups.values(), key=lambda g: (g.paradigm, g.device))

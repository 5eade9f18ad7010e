"""What training jobs and explanations cost, from the CPU and GPU time their workers used."""

from __future__ import annotations

from service.cost.ledger import Charge, CostLedger
from service.registry.manifest import Manifest


def price_published_job(
    ledger: CostLedger, manifest: Manifest, cpu_seconds: float
) -> dict[str, Charge]:
    """Prices a successful job and writes its cost into the manifest being published."""
    gpu_joules = manifest.metrics.get("gpu_joules")
    charges = ledger.price_training(
        cpu_seconds,
        float(manifest.metrics.get("gpu_seconds", 0.0)),
        None if gpu_joules is None else float(gpu_joules),
    )
    sources = sorted({c.energy_source for c in charges.values() if c.energy_source})
    manifest.training_cost = {
        "cpu_seconds": charges["cpu"].device_seconds,
        "gpu_seconds": charges["cuda"].device_seconds if "cuda" in charges else 0.0,
        "joules": sum(c.joules for c in charges.values()),
        "dollars": sum(c.dollars for c in charges.values()),
        "energy_source": "+".join(sources),
    }
    return charges


def charge_explanation(ledger: CostLedger, manifest: Manifest, cpu_seconds: float) -> Charge:
    """Prices an explanation like training (its worker's CPU time, worker start included)
    and adds it to the cost counters under phase "explain"."""
    charges = ledger.price_training(cpu_seconds)
    ledger.record_training(
        charges, paradigm=manifest.paradigm, model=manifest.name, version=manifest.version,
        algorithm=manifest.algorithm, phase="explain",
    )  # fmt: skip
    return charges["cpu"]

"""Serving totals summed over every serving worker, from prometheus-client's shared files.

With `--workers N` each worker charges its model runs to its own in-process ledger and to
the Prometheus counters, which in multiprocess mode live in memory-mapped files in one
directory. The cost report reads those files, so it sums exactly what every worker charged
(the same numbers /metrics shows), including workers that died and were replaced.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client.multiprocess import MultiProcessCollector

from service.cost.ledger import Charge, ServingTotals

_RUNS = "paradigm_inference_batch_size_count"
_ROWS = "paradigm_inference_batch_size_sum"
_COST = {
    "paradigm_device_seconds_total": "device_seconds",
    "paradigm_cost_dollars_total": "dollars",
    "paradigm_energy_joules_total": "joules",
}
_LABELS = ("paradigm", "model", "version", "algorithm", "device")


def serving_totals(directory: Path) -> list[ServingTotals]:
    """Each model version's runs, rows and charge, as every worker recorded them."""
    totals: dict[tuple[str, ...], ServingTotals] = {}

    def line(labels: dict[str, str]) -> ServingTotals:
        paradigm, model, version, algorithm, device = (labels.get(n, "") for n in _LABELS)
        key = (paradigm, model, version, algorithm, device)
        found = totals.get(key)
        if found is None:
            found = totals[key] = ServingTotals(
                paradigm, model, version, algorithm, device, charge=Charge()
            )
        return found

    for family in MultiProcessCollector(None, path=str(directory)).collect():
        for sample in family.samples:
            if sample.name == _RUNS:
                line(sample.labels).requests += round(sample.value)
            elif sample.name == _ROWS:
                line(sample.labels).predictions += round(sample.value)
            elif sample.name in _COST and sample.labels.get("phase") == "serve":
                charge = line(sample.labels).charge
                assert charge is not None
                field = _COST[sample.name]
                setattr(charge, field, getattr(charge, field) + sample.value)
                if sample.name == "paradigm_energy_joules_total":
                    charge.energy_source = sample.labels.get("source", "")
    return [t for t in totals.values() if t.requests]

"""The compare report's cascade section: per dataset, the most accurate classical model
first and the most accurate deep model when it is unsure, beside each alone.

Cheap: it reuses the learning curves' full-size models of the first seed (nothing is
trained); each cascade is one calibration (a worker reading the held-out rows, both models
over them, a short serving probe of each), then deleted again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clients.cli import format_markdown
from clients.client import ParadigmClientError
from clients.compare.plan import FULL
from clients.compare.records import Measurements, Run

if TYPE_CHECKING:
    from clients.client import ParadigmClient

#: The goal: within this accuracy of the deep model alone, at the lowest cost.
WITHIN = 0.005


def _best(runs: list[Run]) -> Run | None:
    scored = [r for r in runs if "accuracy" in r.metrics]
    return max(scored, key=lambda r: r.metrics["accuracy"], default=None)


def pairs(m: Measurements, datasets: list[str], seed: int) -> list[tuple[str, Run, Run]]:
    """(dataset, classical, deep) for every classification dataset with both paradigms."""
    found = []
    for dataset in datasets:
        runs = [
            r
            for r in m.runs
            if r.ok and r.purpose in ("curve", "default") and r.dataset == dataset
            and r.seed == seed and r.size == FULL and r.device_requested == "auto"
            and r.task == "classification"
        ]  # fmt: skip
        classical = _best([r for r in runs if r.paradigm == "classical"])
        deep = _best([r for r in runs if r.paradigm == "deep"])
        if classical is not None and deep is not None:
            found.append((dataset, classical, deep))
    return found


def measure(
    client: ParadigmClient, m: Measurements, datasets: list[str], seed: int, prefix: str
) -> None:
    for dataset, classical, deep in pairs(m, datasets, seed):
        record: dict[str, Any] = {
            "dataset": dataset,
            "first": classical.algorithm,
            "then": deep.algorithm,
        }
        name = f"{prefix}-{dataset}-cascade".replace("_", "-")
        try:
            cascade = client.create_cascade(
                name,
                f"{classical.model_name}:{classical.model_version}",
                f"{deep.model_name}:{deep.model_version}",
                accuracy_within_then=WITHIN,
            )
        except ParadigmClientError as error:
            record["error"] = f"{error.code.name}: {error.details}"
            m.cascades.append(record)
            continue
        held = dict(cascade.evaluation)
        record |= {
            "threshold": cascade.threshold,
            "target_met": cascade.target_met,
            "calibration_rows": cascade.calibration_rows,
            "unseen_rows": int(held.get("rows", 0)),
            "escalated": held.get("escalated", cascade.chosen.escalated),
            "accuracy": {
                "cascade": held.get("accuracy", cascade.chosen.accuracy),
                "first": held.get("first_accuracy", cascade.first_alone.accuracy),
                "then": held.get("then_accuracy", cascade.then_alone.accuracy),
            },
            "dollars_per_1k": {
                "cascade": held.get("dollars_per_1k", cascade.chosen.dollars_per_1k),
                "first": cascade.first_cost.dollars_per_1k,
                "then": cascade.then_cost.dollars_per_1k,
            },
            "device_seconds_per_1k": {
                "cascade": held.get("device_seconds_per_1k", cascade.chosen.device_seconds_per_1k),
                "first": cascade.first_cost.device_seconds_per_1k,
                "then": cascade.then_cost.device_seconds_per_1k,
            },
        }
        m.cascades.append(record)
        try:
            client.delete_cascade(name)
        except ParadigmClientError as error:
            m.notes.append(f"could not delete cascade {name}: {error}")


def section(m: Measurements) -> list[str]:
    """The report's lines for the cascades (none when none were measured)."""
    if not m.cascades:
        return []
    rows = []
    for c in m.cascades:
        if "error" in c:
            rows.append([c["dataset"], c["first"], c["then"], "—", "—", c["error"], "—", "—"])
            continue
        accuracy, cost = c["accuracy"], c["dollars_per_1k"]
        ratio = cost["cascade"] / cost["then"] if cost["then"] else float("nan")
        rows.append([
            c["dataset"], c["first"], c["then"], f"{c['threshold']:.3f}",
            f"{c['escalated']:.1%}",
            f"{accuracy['cascade']:.4f} / {accuracy['first']:.4f} / {accuracy['then']:.4f}",
            f"{cost['cascade']:.3g} / {cost['first']:.3g} / {cost['then']:.3g}",
            f"{ratio:.1%}",
        ])  # fmt: skip
    headers = (
        "dataset", "first (classical)", "then (deep)", "threshold", "escalated",
        "accuracy: cascade / classical / deep", "$ per 1k: cascade / classical / deep",
        "cascade vs deep cost",
    )  # fmt: skip
    return [
        "## Cascades: the classical model when it is sure, the deep one otherwise",
        "",
        "Per dataset, the most accurate classical model of the first seed answers the rows it "
        "is sure of and the most accurate deep model the rest (`CreateCascade`, goal: within "
        f"{WITHIN} of the deep model's accuracy and agreeing with it on all but that share of "
        "the calibration half of the held-out rows). Accuracy and escalated share are on the "
        "other half, which the calibration never saw; $ per 1 000 predictions as the probe "
        "priced each model at 64-row requests (the cascade: the first on every row plus the "
        "deep model on the escalated share).",
        "",
        format_markdown(headers, rows),
        "",
    ]

"""Cascade benchmark: a classical model first, a deep one when it is unsure.

`python -m clients.bench.cascade` (or `make bench-cascade`), in one run on one server:

For each case (digits: logistic regression -> CNN; the penguins mixed table: gradient
boosting -> MLP) it trains both models on one split, creates a cascade whose goal is to stay
within `--within` (0.005) accuracy of the deep model alone at the lowest cost, and reports:

1. The calibration curve (accuracy and cost per 1 000 against the share escalated) on the
   calibration half of the held-out rows, as the server stored it.
2. Served, side by side: the other held-out half (rows the calibration never saw), sent
   through ModelInfer to the cascade and to the deep model alone, PASSES times each (more
   for small sets: at least MIN_SERVED_ROWS rows), interleaved, BATCH rows a request.
   Accuracy of each, and what each cost as the server's own ledger charged it
   (paradigm_cascade_cost_total for the cascade, the deep model's
   paradigm_device_seconds_total / paradigm_cost_dollars_total for it alone, read from
   /metrics before and after).

Target (issue 18): cascade accuracy within 0.005 of the deep model at <= 50 % of its cost
per 1 000 predictions, where the curve says that is reachable; reported either way.

The held-out rows are rebuilt here exactly as the server's calibration worker builds them
(service/worker/calibration.py on the server's data directory, same seed and fraction).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from clients.client import ParadigmClient
from clients.harness import paradigm_server
from clients.machine import machine_info
from service.gen.paradigm.v1 import paradigm_pb2 as pb

BATCH = 64
PASSES = 5
#: Rows served per side at least (passes over the unseen rows), so the bill is not noise.
MIN_SERVED_ROWS = 2000


@dataclass(frozen=True)
class Case:
    dataset: str
    first: str
    then: str
    then_parameters: Mapping[str, int | float | str | bool]


def cases(cnn_epochs: int, mlp_epochs: int) -> list[Case]:
    return [
        Case("digits", "logistic_regression", "cnn", {"epochs": cnn_epochs}),
        Case("penguins", "gradient_boosting", "mlp", {"epochs": mlp_epochs}),
        # A cheaper first stage on the same table, for contrast.
        Case("penguins", "logistic_regression", "mlp", {"epochs": mlp_epochs}),
    ]


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **match: str) -> float:
    return sum(
        value
        for labels, value in samples.get(name, [])
        if all(labels.get(k) == v for k, v in match.items())
    )


def held_out(data_dir: Path, dataset: str, inputs: list[str], seed: int, fraction: float) -> Any:
    """The held-out rows as the server's calibration worker writes them, and the half the
    calibration did not use (service/serving/cascade.py: the same permutation)."""
    from service.training.spec import CalibrationRowsSpec
    from service.worker import calibration

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "rows.npz"
        spec = CalibrationRowsSpec(
            dataset_dir=str(data_dir / "datasets" / dataset),
            split_seed=seed,
            test_fraction=fraction,
            inputs=inputs,
            out_path=str(out),
            max_rows=100_000,
        )
        calibration.write_rows(spec)
        with np.load(out, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    labels = arrays.pop(calibration.LABELS)
    rows = len(labels)
    evaluation = np.random.default_rng(0).permutation(rows)[rows // 2 :]
    typed = {
        name: (array.astype(object) if array.dtype.kind == "U" else array)[evaluation]
        for name, array in arrays.items()
    }
    return typed, labels[evaluation]


def serve(
    client: ParadigmClient, name: str, inputs: Mapping[str, np.ndarray], labels: np.ndarray
) -> tuple[float, float]:
    """Sends every row, BATCH a request; accuracy and seconds."""
    rows = len(labels)
    answers: list[str] = []
    started = time.perf_counter()
    for start in range(0, rows, BATCH):
        part = {k: v[start : start + BATCH] for k, v in inputs.items()}
        result = client.infer(name, part, outputs=["label"])
        answers.extend(
            v.decode() if isinstance(v, bytes) else str(v)
            for v in result.as_numpy("label").reshape(-1)
        )
    seconds = time.perf_counter() - started
    return float(np.mean(np.array(answers) == labels.astype(str))), seconds


def curve_rows(cascade: pb.Cascade) -> list[dict[str, float]]:
    fields = (
        "threshold", "escalated", "accuracy", "dollars_per_1k", "device_seconds_per_1k",
        "joules_per_1k", "agreement",
    )  # fmt: skip
    return [{f: getattr(p, f) for f in fields} for p in cascade.curve]


def run_case(
    client: ParadigmClient,
    metrics_url: str,
    data_dir: Path,
    case: Case,
    within: float,
    trained: dict[str, dict[str, float]],
) -> dict[str, Any]:
    first_name = f"{case.dataset}-{case.first}"
    then_name = f"{case.dataset}-{case.then}"
    no_parameters: dict[str, int | float | str | bool] = {}
    for name, algorithm, parameters in (
        (first_name, case.first, no_parameters),
        (then_name, case.then, dict(case.then_parameters)),
    ):
        if name in trained:  # a model shared by two cases is trained once
            continue
        job = client.start_training(
            case.dataset, algorithm, model_name=name, seed=0, hyperparameters=parameters
        )
        done = client.wait_for_job(job.id)
        trained[name] = dict(done.metrics)
    started = time.perf_counter()
    cascade = client.create_cascade(
        f"{first_name}-cascade", first_name, then_name, accuracy_within_then=within
    )
    calibrate_seconds = time.perf_counter() - started
    model = client.get_model(then_name)
    metadata = client.model_metadata(first_name)
    inputs, labels = held_out(data_dir, case.dataset, [i.name for i in metadata.inputs], 0, 0.25)
    # Side by side: the deep model alone and the cascade, interleaved, PASSES times each.
    cascade_name = cascade.name
    accuracy: dict[str, float] = {}
    spent = {who: {"dollars": 0.0, "device_seconds": 0.0} for who in ("then", "cascade")}
    seconds = {"then": 0.0, "cascade": 0.0}
    served_rows = 0
    passes = max(PASSES, -(-MIN_SERVED_ROWS // len(labels)))
    for _ in range(passes):
        for who, name in (("then", then_name), ("cascade", cascade_name)):
            before = scrape(metrics_url)
            accuracy[who], took = serve(client, name, inputs, labels)
            after = scrape(metrics_url)
            seconds[who] += took
            if who == "then":
                for unit, metric in (
                    ("dollars", "paradigm_cost_dollars_total"),
                    ("device_seconds", "paradigm_device_seconds_total"),
                ):
                    match = {"phase": "serve", "model": then_name, "version": model.version}
                    spent[who][unit] += total(after, metric, **match) - total(
                        before, metric, **match
                    )
            else:
                for unit in ("dollars", "device_seconds"):
                    match = {"cascade": cascade_name, "unit": unit}
                    spent[who][unit] += total(
                        after, "paradigm_cascade_cost_total", **match
                    ) - total(before, "paradigm_cascade_cost_total", **match)
        served_rows += len(labels)
    final = scrape(metrics_url)
    escalated_rows = total(final, "paradigm_cascade_rows_total", cascade=cascade_name, stage="then")
    all_rows = total(final, "paradigm_cascade_rows_total", cascade=cascade_name)
    per_1k = {
        who: {unit: value * 1000.0 / served_rows for unit, value in units.items()}
        for who, units in spent.items()
    }
    cost_ratio = per_1k["cascade"]["dollars"] / per_1k["then"]["dollars"]
    gap = accuracy["then"] - accuracy["cascade"]
    curve = curve_rows(cascade)
    reachable = [
        p
        for p in curve
        if p["accuracy"] >= cascade.then_alone.accuracy - within
        and p["dollars_per_1k"] <= 0.5 * cascade.then_cost.dollars_per_1k
    ]
    return {
        "dataset": case.dataset,
        "first": {"name": first_name, "algorithm": case.first, "metrics": trained[first_name]},
        "then": {
            "name": then_name,
            "algorithm": case.then,
            "hyperparameters": dict(case.then_parameters),
            "metrics": trained[then_name],
        },
        "calibrate_seconds": calibrate_seconds,
        "cascade": {
            "threshold": cascade.threshold,
            "target_accuracy": cascade.target_accuracy,
            "target_met": cascade.target_met,
            "calibration_rows": cascade.calibration_rows,
            "chosen": curve_point(cascade.chosen),
            "first_alone": curve_point(cascade.first_alone),
            "then_alone": curve_point(cascade.then_alone),
            "first_cost_per_1k": stage_cost(cascade.first_cost),
            "then_cost_per_1k": stage_cost(cascade.then_cost),
            "evaluation": dict(cascade.evaluation),
        },
        "curve": curve,
        "curve_says_reachable": bool(reachable),
        "served": {
            "rows_per_pass": len(labels),
            "passes": passes,
            "batch": BATCH,
            "accuracy": accuracy,
            "accuracy_gap": gap,
            "cost_per_1k": per_1k,
            "cost_ratio_dollars": cost_ratio,
            "seconds": seconds,
            "escalated_share": escalated_rows / all_rows if all_rows else 0.0,
            "target_met": gap <= within + 1e-12 and cost_ratio <= 0.5,
        },
    }


def curve_point(point: pb.CascadePoint) -> dict[str, float]:
    return {
        "threshold": point.threshold,
        "escalated": point.escalated,
        "accuracy": point.accuracy,
        "dollars_per_1k": point.dollars_per_1k,
        "device_seconds_per_1k": point.device_seconds_per_1k,
        "agreement": point.agreement,
    }


def stage_cost(cost: pb.CascadeStageCost) -> dict[str, float]:
    return {
        "dollars": cost.dollars_per_1k,
        "device_seconds": cost.device_seconds_per_1k,
        "joules": cost.joules_per_1k,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = result["curve"]
    share = [p["escalated"] for p in curve]
    cascade = result["cascade"]
    then_cost = cascade["then_cost_per_1k"]["dollars"]
    figure, accuracy_axis = plt.subplots(figsize=(7, 4.2))
    accuracy_axis.plot(share, [p["accuracy"] for p in curve], color="tab:blue", label="accuracy")
    accuracy_axis.axhline(
        cascade["then_alone"]["accuracy"] - 0.005, color="tab:blue", linestyle=":",
        label="deep alone - 0.005",
    )  # fmt: skip
    accuracy_axis.plot(
        share, [p["agreement"] for p in curve], color="tab:green", linewidth=0.8,
        label=f"agreement with {result['then']['algorithm']}",
    )  # fmt: skip
    chosen = cascade["chosen"]
    accuracy_axis.scatter(
        [chosen["escalated"]], [chosen["accuracy"]], color="black", zorder=5,
        label=f"chosen (threshold {chosen['threshold']:.3f})",
    )  # fmt: skip
    accuracy_axis.set_xlabel(f"share escalated to {result['then']['algorithm']}")
    accuracy_axis.set_ylabel("accuracy (calibration rows)")
    cost_axis = accuracy_axis.twinx()
    cost_axis.plot(
        share, [p["dollars_per_1k"] / then_cost for p in curve], color="tab:red",
        label="cost / deep alone",
    )  # fmt: skip
    cost_axis.axhline(0.5, color="tab:red", linestyle=":", label="50 % of deep's cost")
    cost_axis.set_ylabel("cost per 1 000 / deep model alone")
    cost_axis.set_ylim(0, max(1.1, max(p["dollars_per_1k"] for p in curve) / then_cost * 1.05))
    lines = accuracy_axis.get_legend_handles_labels()
    more = cost_axis.get_legend_handles_labels()
    accuracy_axis.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize=8)
    accuracy_axis.set_title(
        f"{result['dataset']}: {result['first']['algorithm']} -> {result['then']['algorithm']}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--within", type=float, default=0.005)
    parser.add_argument("--cnn-epochs", type=int, default=15)
    parser.add_argument("--mlp-epochs", type=int, default=15)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="paradigm-bench-cascade-") as scratch:
        workdir = Path(scratch)
        data_dir = workdir / "data"
        with paradigm_server(workdir, "cascade", data_dir) as server:
            assert server.metrics_url is not None
            with ParadigmClient(server.target, timeout=900) as client:
                client.wait_until_ready(60)
                trained: dict[str, dict[str, float]] = {}
                for case in cases(args.cnn_epochs, args.mlp_epochs):
                    result = run_case(
                        client, server.metrics_url, data_dir, case, args.within, trained
                    )
                    results.append(result)
                    stem = f"cascade-{case.dataset}-{case.first}-{case.then}"
                    plot(result, args.out / f"{stem}.png")
                    with (args.out / f"{stem}-curve.csv").open("w") as out:
                        writer = csv.DictWriter(out, fieldnames=list(result["curve"][0]))
                        writer.writeheader()
                        writer.writerows(result["curve"])
                    print(summary(result), flush=True)
    report = {"machine": machine_info(), "within": args.within, "cases": results}
    (args.out / "cascade-cpu.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}/cascade-cpu.json, cascade-*.png, cascade-*-curve.csv")
    return 0


def summary(result: dict[str, Any]) -> str:
    served = result["served"]
    cascade = result["cascade"]
    return (
        f"{result['dataset']}: {result['first']['algorithm']} -> {result['then']['algorithm']}: "
        f"threshold {cascade['threshold']:.4f}, calibration: accuracy "
        f"{cascade['chosen']['accuracy']:.4f} vs deep {cascade['then_alone']['accuracy']:.4f} "
        f"at {cascade['chosen']['dollars_per_1k'] / cascade['then_alone']['dollars_per_1k']:.1%}"
        f" of its cost (curve says reachable: {result['curve_says_reachable']}); served on "
        f"{served['rows_per_pass']} unseen rows x {served['passes']}: accuracy "
        f"{served['accuracy']['cascade']:.4f} vs {served['accuracy']['then']:.4f}, cost "
        f"{served['cost_ratio_dollars']:.1%} of deep alone, escalated "
        f"{served['escalated_share']:.1%}; target met: {served['target_met']}"
    )


if __name__ == "__main__":
    raise SystemExit(main())

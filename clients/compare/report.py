"""report.md: the guide's table rewritten with measurements and verdicts, then the details."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from clients.cli import format_markdown
from clients.compare import cascades
from clients.compare.plan import FULL
from clients.compare.records import Measurements
from clients.compare.stats import summarize
from clients.compare.tuning import space_size
from clients.compare.verdicts import (
    RowVerdict,
    curves,
    datasets_measured,
    explanation_agreement,
    full_runs,
    full_scores,
    metric_name,
    tuning_results,
)

CNN_NOTE = (
    "The CNN is the guide's: Conv2D(64, 3x3, tanh) → MaxPool(2) → Conv2D(128, 3x3, tanh) → "
    "MaxPool(2) → Flatten → Dropout → Dense, batch 128, 15 epochs, RMSprop, validation split "
    "0.25 ('same' padding). The guide prints its last layer as relu trained with mean squared "
    "error; ours ends in softmax trained with cross-entropy, which is what works for "
    "classification."
)


def _bold(verdict: str) -> str:
    return f"**{verdict}**"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def verdict_table(rows: list[RowVerdict]) -> str:
    body = [
        [
            row.row,
            _cell(row.deep_claim),
            _cell(row.classical_claim),
            _cell(row.key),
            _bold(row.verdict),
        ]
        for row in rows
    ]
    headers = (
        "row",
        "the guide: deep learning",
        "… classical learning",
        "measured here",
        "verdict",
    )
    return format_markdown(headers, body)


def header(m: Measurements, docs: str) -> list[str]:
    meta = m.meta
    machine = meta.get("machine", {})
    gpu = m.gpu
    gpu_text = (
        "a GPU (the server trained on cuda)"
        if gpu.get("present")
        else f"no GPU on this run ({gpu.get('how', 'not reported')})"
    )
    versions = ", ".join(f"{k} {v}" for k, v in sorted(meta.get("server_libraries", {}).items()))
    client_versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
    prices = ", ".join(
        f"{k} ${v:g}/h" for k, v in sorted(meta.get("prices_per_device_hour", {}).items())
    )
    lines = [
        "# Deep vs classical learning: the guide's claims, measured",
        "",
        f"Run {meta.get('started', '?')} for {meta.get('wall_seconds', 0):.0f} s "
        f"(plan `{meta.get('plan', {}).get('name', '?')}`) on {machine.get('cpu', '?')} "
        f"({machine.get('cores', '?')} cores), {gpu_text}. "
        f"Python {machine.get('python', '?')}, {machine.get('platform', '?')}; commit "
        f"{machine.get('git_commit') or '?'}"
        f"{' with uncommitted changes' if meta.get('uncommitted_changes') else ''}.",
        "",
        f"- Command: `{meta.get('command', '?')}`; seconds per phase: "
        + (", ".join(f"{k} {v:g}" for k, v in meta.get("phase_seconds", {}).items()) or "-"),
        f"- Server: {meta.get('server', '?')}; training libraries {versions or '?'}; "
        f"client {client_versions or '?'}.",
        f"- Prices (server settings): {prices or '?'}; energy "
        f"{', '.join(sorted(meta.get('energy_sources', []))) or '?'} (an estimate is CPU-seconds "
        "times the configured watts per core).",
        f"- Raw data: [`results.json`](results.json) (every job, explanation and load point). "
        f"How each verdict is decided: [docs/compare.md]({docs}#verdict-rules).",
        "",
    ]
    return lines


def curve_table(m: Measurements) -> str:
    data = curves(m)
    rows = []
    for (dataset, algorithm), points in sorted(data.items()):
        for p in points:
            rows.append(
                [
                    dataset,
                    algorithm,
                    m.paradigm_of(algorithm),
                    "full" if p.size == FULL else str(p.size),
                    f"{p.n_train:.0f}",
                    f"{p.score.mean:.3f}",
                    f"{p.score.std:.3f}",
                    f"{p.score.minimum:.3f}-{p.score.maximum:.3f}",
                    str(p.score.n),
                ]
            )
    return format_markdown(
        (
            "dataset",
            "algorithm",
            "paradigm",
            "size",
            "rows fitted",
            "mean score",
            "std",
            "min-max",
            "seeds",
        ),
        rows,
    )


def accuracy_table(m: Measurements) -> str:
    rows = []
    for dataset in datasets_measured(m):
        regression = metric_name(m, dataset) == "R²"
        for algorithm, score in sorted(full_scores(m, dataset).items()):
            runs = full_runs(m, dataset, algorithm)
            other = summarize(
                [r.metrics.get("rmse" if regression else "f1_macro", math.nan) for r in runs]
            )
            rows.append(
                [
                    dataset,
                    algorithm,
                    m.paradigm_of(algorithm),
                    f"{statistics.fmean(r.train_samples for r in runs):.0f}",
                    f"{'R²' if regression else 'accuracy'} {score.text()}",
                    f"{'RMSE' if regression else 'F1 macro'} {other.text()}",
                ]
            )
    return format_markdown(
        (
            "dataset",
            "algorithm",
            "paradigm",
            "rows fitted",
            "score, mean ± 95 % CI",
            "second metric",
        ),
        rows,
    )


def _mean(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3g}" if values else "-"


def cost_table(m: Measurements) -> str:
    grouped: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for r in m.runs:
        if r.ok and r.size == FULL and r.purpose in ("curve", "default", "hardware"):
            grouped[(r.dataset, r.algorithm, r.device)].append(r)
    rows = []
    for (dataset, algorithm, device), runs in sorted(grouped.items()):
        rows.append(
            [
                dataset,
                algorithm,
                runs[0].paradigm,
                device,
                _mean([r.metrics.get("fit_seconds", 0.0) for r in runs]),
                _mean([r.metrics.get("preprocessing_seconds", 0.0) * 1000 for r in runs]),
                _mean([r.metrics.get("export_seconds", 0.0) for r in runs]),
                _mean([r.worker_seconds for r in runs]),
                _mean([float(r.cost.get("device_seconds", 0.0)) for r in runs]),
                _mean([float(r.cost.get("joules", 0.0)) for r in runs]),
                f"{statistics.fmean(float(r.cost.get('dollars', 0.0)) for r in runs):.2e}",
                str(len(runs)),
            ]
        )
    return format_markdown(
        (
            "dataset",
            "algorithm",
            "paradigm",
            "device",
            "fit s",
            "pre-proc ms",
            "export s",
            "worker wall s",
            "device-s",
            "J",
            "$",
            "runs",
        ),
        rows,
    )


def tuning_tables(m: Measurements) -> list[str]:
    space_rows = []
    for entry in m.catalog:
        size = space_size(entry)
        space_rows.append(
            [
                entry["name"],
                entry["paradigm"],
                str(size["dims"]),
                str(size["continuous"]),
                f"10^{size['log10_discrete']:.1f}",
                ", ".join(h["name"] for h in entry["hyperparameters"]) or "-",
            ]
        )
    lines = [
        format_markdown(
            ("algorithm", "paradigm", "hyperparameters", "continuous", "discrete configs", "names"),
            space_rows,
        )
    ]
    search_rows = []
    for t in tuning_results(m):
        params = ", ".join(f"{k}={v}" for k, v in sorted((t.best_params or {}).items()))
        search_rows.append(
            [
                t.algorithm,
                t.paradigm,
                t.dataset,
                str(t.trials),
                "-" if t.search_default is None else f"{t.search_default:.3f}",
                "-" if t.search_best is None else f"{t.search_best:.3f}",
                t.held_out_default.text(),
                t.held_out_best.text(),
                "-" if t.gain is None else f"{t.gain:+.3f}",
                f"{t.cpu_seconds:.0f}",
                f"{t.dollars:.5f}",
                _cell(params) or ("defaults kept" if t.best_params == {} else "-"),
            ]
        )
    if search_rows:
        lines.append(
            format_markdown(
                (
                    "algorithm",
                    "paradigm",
                    "dataset",
                    "trials",
                    "default (search split)",
                    "best trial (search split)",
                    "default (held-out)",
                    "best (held-out)",
                    "gain",
                    "search CPU-s",
                    "search $",
                    "best configuration",
                ),
                search_rows,
            )
        )
    boxes = [
        f"- {t['algorithm']}: " + ", ".join(f"{k} {v}" for k, v in t["box"].items())
        for t in m.tuning
    ]
    if boxes:
        lines.append("Sampled ranges (catalog range ∩ budget box):\n\n" + "\n".join(boxes) + "\n")
    return lines


def explanation_section(m: Measurements) -> list[str]:
    lines = []
    for e in m.explanations:
        if "error" in e:
            lines.append(f"- **{e['algorithm']}** ({e['paradigm']}): not explained — {e['error']}")
            continue
        rho = explanation_agreement(e)
        top = "; ".join(
            f"{f['feature']} {f['importance_mean']:.3f}"
            + ("" if f.get("native") is None else f" (native {f['native']:.3g})")
            for f in e["features"][:5]
        )
        lines.append(
            f"- **{e['algorithm']}** ({e['paradigm']}, `{e['model']}` v{e['version']}, "
            f"{e['rows']} rows, baseline {e['metric']} {e['baseline_score']:.3f}): native "
            f"importances: {e['native_kind'] or 'none'}"
            + ("" if math.isnan(rho) else f"; Spearman(native, permutation) = {rho:.2f}")
            + f". Top 5 by permutation (mean score drop): {top}. Cost: {e['seconds']:.2f} s, "
            f"{e['cost']['device_seconds']:.2f} CPU-s, {e['cost']['joules']:.1f} J, "
            f"${e['cost']['dollars']:.6f}."
        )
    by_paradigm: dict[str, list[float]] = defaultdict(list)
    for e in m.explanations:
        if "error" not in e:
            by_paradigm[e["paradigm"]].append(float(e["cost"]["dollars"]))
    if by_paradigm:
        lines.append(
            "- Mean explanation cost per model: "
            + ", ".join(f"{p} ${statistics.fmean(v):.6f}" for p, v in sorted(by_paradigm.items()))
        )
    return lines


def serving_tables(m: Measurements) -> list[str]:
    points = m.serving.get("points") or []
    if not points:
        return ["Not measured."]
    settings = m.serving.get("settings", {})
    rows = [
        [
            p["algorithm"],
            p["paradigm"],
            p["device"],
            str(p["batch"]),
            f"{p['p50_ms']:.3f}",
            f"{p['p99_ms']:.3f}",
            f"{p['throughput_rps']:.0f}",
            f"{p['rows_per_s']:.0f}",
            str(p["errors"]),
        ]
        for p in points
    ]
    lines = [
        f"One closed-loop stream (`clients/bench/load.py`), {settings.get('duration_s', 0):g} s "
        f"measured after {settings.get('warmup_s', 0):g} s warm-up per point, random inputs of "
        "the model's shape, client and server on the same machine.",
        "",
        format_markdown(
            (
                "algorithm",
                "paradigm",
                "device",
                "batch",
                "p50 ms",
                "p99 ms",
                "req/s",
                "rows/s",
                "errors",
            ),
            rows,
        ),
    ]
    costs = [
        [
            c["algorithm"],
            c["paradigm"],
            c["device"],
            str(c["predictions"]),
            f"{c['per_1k']['device_seconds']:.4f}",
            f"{c['per_1k']['joules']:.3f}",
            f"{c['per_1k']['dollars']:.2e}",
            c["per_1k"]["energy_source"] or "-",
        ]
        for c in m.serving.get("models", [])
    ]
    if costs:
        lines += [
            "Per 1 000 predictions, from GetCostReport (all batch sizes of the load together):",
            "",
            format_markdown(
                (
                    "algorithm",
                    "paradigm",
                    "device",
                    "predictions",
                    "device-s / 1k",
                    "J / 1k",
                    "$ / 1k",
                    "energy",
                ),
                costs,
            ),
        ]
    return lines


def write_report(
    m: Measurements,
    rows: list[RowVerdict],
    figures: dict[str, str],
    path: Path,
    docs: str = "docs/compare.md",
) -> str:
    """Writes report.md; `docs` is the link to docs/compare.md as seen from the report."""
    lines = header(m, docs)
    lines += [
        "## The guide's table, measured",
        "",
        "Every verdict speaks of this data on this hardware only. Rules: "
        f"[docs/compare.md]({docs}#verdict-rules).",
        "",
        verdict_table(rows),
    ]
    details = {row.row: row for row in rows}

    def row_section(name: str, title: str) -> list[str]:
        row = details[name]
        out = [f"## {title} — {_bold(row.verdict)}", ""]
        out += [f"- {_cell(e)}" for e in row.evidence]
        out += ["", f"*Rule:* {row.rule}", ""]
        return out

    def figure(key: str, alt: str) -> list[str]:
        return [f"![{alt}]({figures[key]})", ""] if key in figures else []

    lines += row_section("Data", "Data: learning curves")
    lines += figure("learning_curves", "learning curves")
    lines += [
        "<details><summary>Every point of the curves</summary>",
        "",
        curve_table(m),
        "</details>",
        "",
    ]
    lines += row_section("Accuracy", "Accuracy at the full training split")
    lines += [accuracy_table(m), f"Intervals: mean ± t(0.975, n-1)·s/√n over seeds. {CNN_NOTE}", ""]
    lines += row_section("Hardware", "Hardware")
    lines += [cost_table(m)]
    lines += figure("accuracy_vs_cost", "accuracy vs training cost")
    lines += row_section("Engineering", "Engineering")
    lines += row_section("Training time", "Training time")
    lines += row_section("Tuning", "Tuning")
    lines += tuning_tables(m)
    lines += figure("tuning", "random search")
    lines += row_section("Processing time", "Processing time")
    lines += row_section("Algorithms", "Algorithms")
    lines += row_section("Interpretation", "Interpretation")
    lines += [*explanation_section(m), ""]
    lines += ["## Serving (the cost side of Hardware)", ""]
    lines += serving_tables(m)
    lines += figure("latency_vs_batch", "latency vs batch")
    lines += figure("cost_per_1k", "cost per 1000 predictions")
    lines += cascades.section(m)
    if m.notes:
        lines += ["## Notes", "", *(f"- {_cell(n)}" for n in m.notes), ""]
    text = "\n".join(lines).rstrip() + "\n"
    path.write_text(text)
    return text


def energy_sources(m: Measurements) -> set[str]:
    return {
        str(r.cost.get("energy_source")) for r in m.runs if r.ok and r.cost.get("energy_source")
    }

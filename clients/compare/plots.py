"""The report's PNG figures (matplotlib, Agg backend): one function per figure.

Each returns the file name it wrote, or None when there was nothing to draw.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from clients.compare.records import CLASSICAL, DEEP, Measurements
from clients.compare.verdicts import (
    curves,
    datasets_measured,
    full_runs,
    full_scores,
    metric_name,
    tuning_results,
)

PALETTE = {
    CLASSICAL: ["#1f77b4", "#17becf", "#2ca02c", "#7f7f7f", "#bcbd22", "#9467bd", "#8c564b"],
    DEEP: ["#d62728", "#ff7f0e", "#e377c2", "#8c2d04"],
}
MARKERS = {CLASSICAL: "o", DEEP: "s"}
LINES = {CLASSICAL: "-", DEEP: "--"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain_log_axis(axis: Any, ticks: list[float] | None = None) -> None:
    """Log axis labelled with plain numbers (50, 100, 1000), not powers."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    if ticks:
        axis.set_ticks(ticks, [f"{t:g}" for t in ticks])
        axis.set_minor_formatter(NullFormatter())
    else:
        formatter = ScalarFormatter()
        formatter.set_scientific(False)
        axis.set_major_formatter(formatter)
        axis.set_minor_formatter(NullFormatter())


def _save(plt: Any, fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _colors(m: Measurements, algorithms: list[str]) -> dict[str, str]:
    colors: dict[str, str] = {}
    used: dict[str, int] = defaultdict(int)
    for a in sorted(algorithms):
        paradigm = m.paradigm_of(a) or CLASSICAL
        palette = PALETTE.get(paradigm, PALETTE[CLASSICAL])
        colors[a] = palette[used[paradigm] % len(palette)]
        used[paradigm] += 1
    return colors


def learning_curves(m: Measurements, out: Path) -> str | None:
    data = curves(m)
    datasets = [d for d in datasets_measured(m) if any(k[0] == d for k in data)]
    if not datasets:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.6 * len(datasets), 4.4), squeeze=False)
    colors = _colors(m, sorted({a for _, a in data}))
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for (d, algorithm), points in sorted(data.items()):
            if d != dataset:
                continue
            paradigm = m.paradigm_of(algorithm)
            xs = [p.n_train for p in points]
            ys = [p.score.mean for p in points]
            low = [p.score.mean - p.score.std for p in points]
            high = [p.score.mean + p.score.std for p in points]
            color = colors[algorithm]
            ax.plot(
                xs,
                ys,
                LINES.get(paradigm, "-"),
                marker=MARKERS.get(paradigm, "o"),
                color=color,
                label=f"{algorithm} ({paradigm})",
            )
            ax.fill_between(xs, low, high, color=color, alpha=0.15, linewidth=0)
        ax.set_xscale("log")
        sizes = sorted(
            {round(p.n_train) for (d, _), pts in data.items() if d == dataset for p in pts}
        )
        _plain_log_axis(ax.xaxis, [float(s) for s in sizes])
        ax.tick_params(axis="x", labelrotation=45)
        ax.set_xlabel("training rows (log)")
        ax.set_ylabel(f"test {metric_name(m, dataset)}")
        seeds = max(
            (p.score.n for (d, _), pts in data.items() if d == dataset for p in pts), default=0
        )
        ax.set_title(f"{dataset}: mean ± std over {seeds} seeds")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Learning curves: test score vs training rows", fontsize=11)
    return _save(plt, fig, out / "learning_curves.png")


def latency_vs_batch(m: Measurements, out: Path) -> str | None:
    points = m.serving.get("points") or []
    if not points:
        return None
    plt = _pyplot()
    fig, (ax_lat, ax_rows) = plt.subplots(1, 2, figsize=(11, 4.2))
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        by_model[p["algorithm"]].append(p)
    colors = _colors(m, list(by_model))
    for algorithm, series in by_model.items():
        series.sort(key=lambda p: p["batch"])
        paradigm = series[0]["paradigm"]
        xs = [p["batch"] for p in series]
        color = colors[algorithm]
        label = f"{algorithm} ({paradigm}, {series[0]['device']})"
        ax_lat.plot(xs, [p["p50_ms"] for p in series], "o-", color=color, label=f"{label} p50")
        ax_lat.plot(
            xs, [p["p99_ms"] for p in series], "s--", color=color, alpha=0.6, label=f"{label} p99"
        )
        ax_rows.plot(xs, [p["rows_per_s"] for p in series], "o-", color=color, label=label)
    batches = sorted({float(p["batch"]) for p in points})
    for ax in (ax_lat, ax_rows):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _plain_log_axis(ax.xaxis, batches)
        _plain_log_axis(ax.yaxis)
        ax.set_xlabel("rows per request (batch)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    ax_lat.set_ylabel("ModelInfer latency (ms)")
    ax_rows.set_ylabel("rows predicted per second")
    fig.suptitle("Serving: one closed-loop stream, latency and throughput vs batch size")
    return _save(plt, fig, out / "latency_vs_batch.png")


def cost_per_1k(m: Measurements, out: Path) -> str | None:
    groups = m.serving.get("paradigms") or []
    if not groups:
        return None
    plt = _pyplot()
    fig, (ax_usd, ax_j) = plt.subplots(1, 2, figsize=(10, 4))
    labels = [f"{g['paradigm']}\n{g['device']}" for g in groups]
    colors = [PALETTE.get(g["paradigm"], PALETTE[CLASSICAL])[0] for g in groups]
    dollars = [g["per_1k"]["dollars"] for g in groups]
    joules = [g["per_1k"]["joules"] for g in groups]
    ax_usd.bar(labels, dollars, color=colors)
    ax_j.bar(labels, joules, color=colors)
    for ax, values, fmt in ((ax_usd, dollars, "${:.2e}"), (ax_j, joules, "{:.3g} J")):
        for i, v in enumerate(values):
            ax.text(i, v, fmt.format(v), ha="center", va="bottom", fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    ax_usd.set_ylabel("dollars per 1 000 predictions")
    ax_j.set_ylabel("joules per 1 000 predictions")
    sources = sorted({g["per_1k"]["energy_source"] for g in groups if g["per_1k"]["energy_source"]})
    fig.suptitle(
        "Serving cost per 1 000 predictions by paradigm and device "
        f"(energy: {', '.join(sources) or '-'}; all batch sizes of the load)"
    )
    return _save(plt, fig, out / "cost_per_1k.png")


def accuracy_vs_cost(m: Measurements, out: Path) -> str | None:
    datasets = datasets_measured(m)
    if not datasets:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.6 * len(datasets), 4.4), squeeze=False)
    drew = False
    for ax, dataset in zip(axes[0], datasets, strict=True):
        scores = full_scores(m, dataset)
        for algorithm, score in sorted(scores.items()):
            runs = full_runs(m, dataset, algorithm)
            dollars = [float(r.cost.get("dollars", 0.0)) for r in runs]
            if not dollars or not any(dollars):
                continue
            paradigm = m.paradigm_of(algorithm)
            color = PALETTE.get(paradigm, PALETTE[CLASSICAL])[0]
            ax.errorbar(
                statistics.fmean(dollars),
                score.mean,
                yerr=score.std,
                marker=MARKERS.get(paradigm, "o"),
                color=color,
                capsize=3,
                linestyle="none",
            )
            ax.annotate(
                algorithm,
                (statistics.fmean(dollars), score.mean),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
            drew = True
        ax.set_xscale("log")
        ax.set_xlabel("training cost per run ($, worker CPU time x price; log)")
        ax.set_ylabel(f"test {metric_name(m, dataset)} (mean ± std)")
        ax.set_title(f"{dataset}, full training split")
        ax.grid(True, alpha=0.3)
    if not drew:
        plt.close(fig)
        return None
    handles = [
        plt.Line2D([], [], color=PALETTE[p][0], marker=MARKERS[p], linestyle="none", label=p)
        for p in (CLASSICAL, DEEP)
    ]
    axes[0][0].legend(handles=handles, fontsize=8, loc="lower right")
    fig.suptitle("Accuracy vs training cost")
    return _save(plt, fig, out / "accuracy_vs_cost.png")


def tuning(m: Measurements, out: Path) -> str | None:
    results = tuning_results(m)
    if not results:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.4))
    for t in results:
        runs = sorted(
            (
                r
                for r in m.runs
                if r.ok
                and r.purpose == "tune"
                and r.algorithm == t.algorithm
                and r.seed
                == next((x["search_seed"] for x in m.tuning if x["algorithm"] == t.algorithm), 0)
            ),
            key=lambda r: r.trial,
        )
        if not runs:
            continue
        color = PALETTE.get(t.paradigm, PALETTE[CLASSICAL])[0]
        spent, best, xs, ys = 0.0, -1.0, [], []
        for r in runs:
            spent += float(r.cost.get("device_seconds", 0.0))
            best = max(best, r.score() or 0.0)
            xs.append(spent)
            ys.append(best)
        ax.step(
            xs,
            ys,
            where="post",
            color=color,
            marker=MARKERS.get(t.paradigm, "o"),
            label=f"{t.algorithm} best so far",
        )
        if t.search_default is not None:
            ax.axhline(
                t.search_default,
                color=color,
                linestyle=":",
                linewidth=1,
                label=f"{t.algorithm} defaults",
            )
    ax.set_xlabel("CPU-seconds spent on the search (training workers)")
    ax.set_ylabel("test score on the search split")
    ax.set_title("Random search: best score so far vs compute")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, out / "tuning.png")


FIGURES = (learning_curves, latency_vs_batch, cost_per_1k, accuracy_vs_cost, tuning)


def draw_all(m: Measurements, out: Path) -> dict[str, str]:
    """Draws every figure that has data; returns figure function name -> file name."""
    drawn = {}
    for figure in FIGURES:
        name = figure(m, out)
        if name:
            drawn[figure.__name__] = name
    return drawn

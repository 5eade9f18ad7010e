"""The guide's table, row by row: its claim, the evidence measured here, and a verdict.

Each rule is a pure function of a Measurements, with its thresholds named at the top of
this module; docs/compare.md states them in words. A verdict is one of HELD, NOT_HELD
("did not hold") or DEPENDS, and it always speaks of this data on this hardware.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clients.compare.plan import FULL
from clients.compare.records import CLASSICAL, DEEP, PARADIGMS, Measurements, Run, image_features
from clients.compare.stats import Summary, spearman, summarize, welch
from clients.compare.tuning import space_size

HELD, NOT_HELD, DEPENDS = "held", "did not hold", "depends"
VERDICTS = (HELD, NOT_HELD, DEPENDS)

#: Data: the target score is the best full-size mean minus this margin ...
DATA_MARGIN = 0.02
#: ... and deep "needs much more data" when it needs at least this many times the rows.
DATA_FACTOR = 2.0
#: Engineering: best deep minus best classical on raw image pixels, above which classical
#: visibly lacks features (held), and at or below which it needs none (did not hold).
ENGINEERING_GAP_HELD = 0.03
ENGINEERING_GAP_NOT = 0.005
#: Hardware: a deep model "trains adequately" on the CPU when its fit takes at most this.
ADEQUATE_FIT_SECONDS = 60.0
#: Hardware: a GPU "is needed" when it fits the deep model at least this many times faster.
GPU_SPEEDUP = 3.0
#: Training time: share of (deep, classical) pairs with the deep fit slower, at or above
#: which "usually longer" held, at or below which it did not.
SLOWER_SHARE_HELD = 0.75
SLOWER_SHARE_NOT = 0.25
#: Tuning: deep algorithms expose at least this many times the hyperparameters ...
TUNING_DIMS_RATIO = 1.5
#: Processing: "hours" of pre-processing, and "seconds".
HOUR = 3600.0
SECONDS_SCALE = 60.0
#: Algorithms: classical counts "many" next to deep at this ratio or more.
ALGORITHMS_RATIO = 1.5
#: The guide's own lists of algorithms (docs: GUIDE-CLAIMS.md).
GUIDE_ALGORITHMS = {
    CLASSICAL: (
        "linear regression",
        "logistic regression",
        "decision trees",
        "SVM",
        "naive Bayes",
        "KNN",
        "random forest",
    ),
    DEEP: (
        "CNN",
        "RNN",
        "LSTM",
        "deep belief networks",
        "deep Boltzmann machines",
        "stacked autoencoders",
    ),
}
#: Interpretation: native importances "read" the model when they rank features like the
#: permutation importances do, Spearman at least this.
SPEARMAN_MIN = 0.5


@dataclass
class RowVerdict:
    row: str
    deep_claim: str
    classical_claim: str
    verdict: str
    #: The figure that decided it, in a few words.
    key: str
    #: Supporting figures, one line each.
    evidence: list[str] = field(default_factory=list)
    #: The rule that decided it, in one sentence.
    rule: str = ""


# -- summaries shared by the rules and the report ---------------------------------------------


@dataclass(frozen=True)
class CurvePoint:
    size: int
    #: Mean training rows the server reported (the size actually fitted on).
    n_train: float
    score: Summary


def _default_runs(m: Measurements, dataset: str | None = None) -> list[Run]:
    """Successful runs with catalog defaults on the server's own device choice."""
    return [
        r
        for r in m.runs
        if r.ok
        and r.purpose in ("curve", "default")
        and r.device_requested == "auto"
        and (dataset is None or r.dataset == dataset)
        and r.score() is not None
    ]


def curves(m: Measurements) -> dict[tuple[str, str], list[CurvePoint]]:
    """(dataset, algorithm) -> its learning curve, smallest size first, FULL last."""
    grouped: dict[tuple[str, str, int], list[Run]] = defaultdict(list)
    for r in _default_runs(m):
        if r.purpose == "curve":
            grouped[(r.dataset, r.algorithm, r.size)].append(r)
    result: dict[tuple[str, str], list[CurvePoint]] = defaultdict(list)
    for (dataset, algorithm, size), runs in grouped.items():
        n_train = statistics.fmean(r.train_samples for r in runs)
        score = summarize([r.score() or 0.0 for r in runs])
        result[(dataset, algorithm)].append(CurvePoint(size, n_train, score))
    for points in result.values():
        points.sort(key=lambda p: (p.size == FULL, p.size))
    return dict(result)


def full_scores(m: Measurements, dataset: str) -> dict[str, Summary]:
    """algorithm -> summary of its full-size scores over seeds."""
    grouped: dict[str, list[float]] = defaultdict(list)
    for r in _default_runs(m, dataset):
        if r.size == FULL:
            grouped[r.algorithm].append(r.score() or 0.0)
    return {a: summarize(v) for a, v in grouped.items()}


def full_runs(m: Measurements, dataset: str, algorithm: str) -> list[Run]:
    return [r for r in _default_runs(m, dataset) if r.algorithm == algorithm and r.size == FULL]


def best_of(m: Measurements, scores: dict[str, Summary], paradigm: str) -> str | None:
    mine = [a for a in scores if m.paradigm_of(a) == paradigm and scores[a].n]
    return max(mine, key=lambda a: scores[a].mean) if mine else None


def datasets_measured(m: Measurements) -> list[str]:
    return list(dict.fromkeys(r.dataset for r in _default_runs(m)))


def metric_name(m: Measurements, dataset: str) -> str:
    return "R²" if m.datasets.get(dataset, {}).get("task") == "regression" else "accuracy"


def aggregate(verdicts: Sequence[str]) -> str:
    """One verdict for several datasets: theirs when they agree, else DEPENDS."""
    distinct = set(verdicts)
    return verdicts[0] if len(distinct) == 1 else DEPENDS


def _fmt_n(n: float) -> str:
    return f"{n:,.0f}"


# -- the rows ---------------------------------------------------------------------------------


def data_row(m: Measurements) -> RowVerdict:
    row = RowVerdict(
        "Data", "needs a much larger amount of data", "needs less data to train", DEPENDS, ""
    )
    row.rule = (
        f"Per dataset, the target is the best full-size mean score minus {DATA_MARGIN}; "
        "each paradigm needs the fewest training rows at which any of its algorithms' mean "
        f"reaches it. Held if deep needs ≥ {DATA_FACTOR:g}x the rows of classical (or never "
        "gets there), did not hold if it needs no more, depends in between; datasets that "
        "disagree make it depend."
    )
    all_curves = curves(m)
    per_dataset: list[str] = []
    keys: list[str] = []
    for dataset in datasets_measured(m):
        mine = {a: pts for (d, a), pts in all_curves.items() if d == dataset}
        paradigms = {m.paradigm_of(a) for a in mine}
        if not {CLASSICAL, DEEP} <= paradigms:
            continue
        full = [p.score.mean for pts in mine.values() for p in pts if p.size == FULL]
        if not full:
            continue
        target = max(full) - DATA_MARGIN
        metric = metric_name(m, dataset)
        needed: dict[str, float | None] = {}
        smallest: dict[str, tuple[float, float]] = {}
        for paradigm in PARADIGMS:
            reached = [
                p.n_train
                for a, pts in mine.items()
                if m.paradigm_of(a) == paradigm
                for p in pts
                if p.score.mean >= target
            ]
            needed[paradigm] = min(reached) if reached else None
            firsts = [
                (pts[0].n_train, pts[0].score.mean)
                for a, pts in mine.items()
                if m.paradigm_of(a) == paradigm
            ]
            n0 = min(n for n, _ in firsts)
            smallest[paradigm] = (n0, max(s for n, s in firsts if n == n0))
        n_c, n_d = needed[CLASSICAL], needed[DEEP]
        if n_d is None:
            verdict, ratio_text = HELD, "deep never reached it"
        elif n_c is None:
            verdict, ratio_text = NOT_HELD, "classical never reached it"
        else:
            ratio = n_d / n_c
            verdict = HELD if ratio >= DATA_FACTOR else NOT_HELD if ratio <= 1.0 else DEPENDS
            ratio_text = f"{ratio:.2g}x the rows"
        per_dataset.append(verdict)
        shown = {p: "never" if v is None else f"{_fmt_n(v)} rows" for p, v in needed.items()}
        keys.append(
            f"{dataset}: deep {shown[DEEP]}, classical {shown[CLASSICAL]} to {metric} "
            f"{target:.3f} ({ratio_text})"
        )
        needs = {
            p: "never reached it" if v is None else f"needed {_fmt_n(v)} training rows"
            for p, v in needed.items()
        }
        row.evidence.append(
            f"{described(m, dataset)}: to reach {metric} {target:.3f} deep {needs[DEEP]}, "
            "classical "
            f"{needs[CLASSICAL]} ({ratio_text}). At the smallest size "
            f"({_fmt_n(smallest[CLASSICAL][0])} rows) the best classical scored "
            f"{smallest[CLASSICAL][1]:.3f}, the best deep {smallest[DEEP][1]:.3f}: {verdict}."
        )
    if not per_dataset:
        row.key = "not measured (no dataset with both paradigms)"
        return row
    row.verdict = aggregate(per_dataset)
    row.key = "; ".join(keys)
    return row


def accuracy_row(m: Measurements) -> RowVerdict:
    row = RowVerdict(
        "Accuracy", "gives higher accuracy", "gives lower accuracy by comparison", DEPENDS, ""
    )
    row.rule = (
        "Per dataset at the full training split, the best deep and best classical algorithm "
        "(by mean over seeds) are compared with Welch's 95 % interval of the difference: held "
        "if the interval lies above 0, did not hold if below 0, depends if it holds 0 (no "
        "difference these seeds can resolve); datasets that disagree make it depend."
    )
    per_dataset, keys = [], []
    for dataset in datasets_measured(m):
        scores = full_scores(m, dataset)
        c, d = best_of(m, scores, CLASSICAL), best_of(m, scores, DEEP)
        if c is None or d is None:
            continue
        diff = welch(scores[d], scores[c])
        if math.isnan(diff.half_width):
            verdict = DEPENDS
        else:
            verdict = HELD if diff.low > 0 else NOT_HELD if diff.high < 0 else DEPENDS
        per_dataset.append(verdict)
        metric = metric_name(m, dataset)
        width = "" if math.isnan(diff.half_width) else f" ± {diff.half_width:.3f}"
        keys.append(f"{dataset}: deep - classical {diff.estimate:+.3f}{width}")
        row.evidence.append(
            f"{described(m, dataset)} ({metric}): best deep {d} {scores[d].text()}, best "
            f"classical {c} "
            f"{scores[c].text()}; difference {diff.estimate:+.3f}{width} → {verdict}."
        )
    if not per_dataset:
        row.key = "not measured"
        return row
    row.verdict = aggregate(per_dataset)
    row.key = "; ".join(keys)
    return row


def _mean_metric(runs: Iterable[Run], key: str) -> float | None:
    values = [r.metrics[key] for r in runs if key in r.metrics]
    return statistics.fmean(values) if values else None


def _mean_cost(runs: Iterable[Run], key: str) -> float | None:
    values = [float(r.cost[key]) for r in runs if key in r.cost]
    return statistics.fmean(values) if values else None


def deep_fits(m: Measurements, device: str) -> list[tuple[str, str, float, list[Run]]]:
    """(dataset, algorithm, mean fit seconds, runs) of deep models at full size on a device."""
    grouped: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for r in m.runs:
        if (
            r.ok
            and r.paradigm == DEEP
            and r.size == FULL
            and r.device == device
            and (r.purpose in ("curve", "default", "hardware"))
            and not r.hyperparameters
        ):
            grouped[(r.dataset, r.algorithm)].append(r)
    return [
        (d, a, _mean_metric(runs, "fit_seconds") or 0.0, runs) for (d, a), runs in grouped.items()
    ]


def hardware_row(m: Measurements) -> RowVerdict:
    row = RowVerdict(
        "Hardware",
        "needs GPU machines to train adequately",
        "works well on low-end machines (CPUs)",
        DEPENDS,
        "",
    )
    row.rule = (
        f"A deep model trains adequately on the CPU when its full-size fit takes ≤ "
        f"{ADEQUATE_FIT_SECONDS:g} s. Did not hold if every deep model did; with a GPU, held "
        f"if one did not and the GPU fitted it ≥ {GPU_SPEEDUP:g}x faster; depends otherwise "
        "(including a slow CPU fit with no GPU to compare)."
    )
    gpu = bool(m.gpu.get("present"))
    cpu = deep_fits(m, "cpu")
    if not cpu:
        row.key = "not measured (no deep model trained on the CPU)"
        return row
    slowest = max(cpu, key=lambda t: t[2])
    dataset, algorithm, fit, runs = slowest
    rows_fitted = statistics.fmean(r.train_samples for r in runs)
    cpu_ok = fit <= ADEQUATE_FIT_SECONDS
    row.evidence.append(
        f"Slowest deep fit on the CPU: {algorithm} on {dataset} ({_fmt_n(rows_fitted)} rows) "
        f"{fit:.1f} s; its worker used {_mean_cost(runs, 'device_seconds') or 0:.1f} CPU-s, "
        f"{_mean_cost(runs, 'joules') or 0:.0f} J, ${_mean_cost(runs, 'dollars') or 0:.6f}."
    )
    classical = [
        r
        for r in m.runs
        if r.ok and r.paradigm == CLASSICAL and r.size == FULL and r.purpose in ("curve", "default")
    ]
    if classical:
        worst = max(classical, key=lambda r: r.metrics.get("fit_seconds", 0.0))
        row.evidence.append(
            f"Slowest classical fit (CPU): {worst.algorithm} on {worst.dataset} "
            f"{worst.metrics.get('fit_seconds', 0.0):.2f} s."
        )
    serving = {(g["paradigm"], g["device"]): g["per_1k"] for g in m.serving.get("paradigms", [])}
    for device in sorted({d for _, d in serving}):
        c, d = serving.get((CLASSICAL, device)), serving.get((DEEP, device))
        if c and d and c["dollars"]:
            row.evidence.append(
                f"Serving on {device}: deep ${d['dollars']:.2e} and {d['joules']:.3g} J per "
                f"1 000 predictions, classical ${c['dollars']:.2e} and {c['joules']:.3g} J "
                f"({d['dollars'] / c['dollars']:.3g}x)."
            )
    if not gpu:
        row.evidence.append(f"No GPU on this run ({m.gpu.get('how', 'not reported')}).")
        row.verdict = NOT_HELD if cpu_ok else DEPENDS
        row.key = f"no GPU on this run; slowest deep CPU fit {fit:.1f} s ({algorithm}, {dataset})"
        return row
    on_gpu = {(d, a): f for d, a, f, _ in deep_fits(m, "cuda")}
    gpu_fit = on_gpu.get((dataset, algorithm))
    speedup = fit / gpu_fit if gpu_fit else None
    if speedup is not None:
        row.evidence.append(
            f"The GPU fitted {algorithm} on {dataset} in {gpu_fit:.1f} s: {speedup:.1f}x faster."
        )
    if cpu_ok:
        row.verdict = NOT_HELD
    elif speedup is not None and speedup >= GPU_SPEEDUP:
        row.verdict = HELD
    else:
        row.verdict = DEPENDS
    shown = "-" if speedup is None else f"{speedup:.1f}x"
    row.key = f"deep CPU fit {fit:.1f} s, GPU speed-up {shown} ({algorithm}, {dataset})"
    return row


def described(m: Measurements, dataset: str) -> str:
    """A dataset's name, and for a table what its columns are: "penguins (a table: 5 numeric,
    2 categorical columns; 19 missing cells)"."""
    info = m.datasets.get(dataset, {})
    kinds = info.get("column_kinds") or {}
    if not kinds:
        return dataset
    columns = ", ".join(f"{n} {kind.lower()}" for kind, n in sorted(kinds.items()))
    return f"{dataset} (a table: {columns} columns; {info.get('missing_cells', 0)} missing cells)"


def _features_engineering(m: Measurements, dataset: str, row: RowVerdict) -> tuple[str, str] | None:
    """Measured directly where the plan has a classical model on hand-made features
    ("+hog"): the claim holds if those features lift classical by more than the gap while
    the networks on raw pixels do at least as well without them; it does not hold if the
    features make no difference."""
    scores = full_scores(m, dataset)
    engineered = {a: s for a, s in scores.items() if image_features(a)}
    raw = {a: s for a, s in scores.items() if not image_features(a)}
    c_raw, c_features = best_of(m, raw, CLASSICAL), best_of(m, engineered, CLASSICAL)
    deep = best_of(m, raw, DEEP)
    if c_features is None or c_raw is None or deep is None:
        return None
    lift = scores[c_features].mean - scores[c_raw].mean
    deep_gap = scores[deep].mean - scores[c_features].mean
    verdict = (
        HELD
        if lift > ENGINEERING_GAP_HELD and deep_gap >= -ENGINEERING_GAP_HELD
        else NOT_HELD
        if lift <= ENGINEERING_GAP_NOT
        else DEPENDS
    )
    row.evidence.append(
        f"{dataset} (uint8 images, measured directly): classical on raw pixels {c_raw} "
        f"{scores[c_raw].mean:.3f}; classical on hand-made features {c_features} "
        f"{scores[c_features].mean:.3f} ({lift:+.3f}); deep on raw pixels {deep} "
        f"{scores[deep].mean:.3f} ({deep_gap:+.3f} against the features) → {verdict}."
    )
    return verdict, f"{dataset}: hand-made features {lift:+.3f} for classical, deep {deep_gap:+.3f}"


def _text_engineering(m: Measurements, dataset: str, row: RowVerdict) -> None:
    """Evidence: TF-IDF (a representation someone chose) against word vectors learned."""
    scores = full_scores(m, dataset)
    c, d = best_of(m, scores, CLASSICAL), best_of(m, scores, DEEP)
    if c is None or d is None:
        return
    row.evidence.append(
        f"{dataset} (text): classical on TF-IDF word n-grams {c} {scores[c].mean:.3f}; deep "
        f"learning its own word vectors {d} {scores[d].mean:.3f} "
        f"({scores[d].mean - scores[c].mean:+.3f}); both tokenise inside the served graph."
    )


def _table_engineering(m: Measurements, dataset: str, row: RowVerdict) -> None:
    """Evidence only: on a table both paradigms get the same represented columns."""
    scores = full_scores(m, dataset)
    c, d = best_of(m, scores, CLASSICAL), best_of(m, scores, DEEP)
    if c is None or d is None:
        return
    row.evidence.append(
        f"{described(m, dataset)}: the service did the representing for both paradigms "
        "(median for missing numbers, one-hot with a 'missing' category for words, fitted on "
        f"the training rows), so classical with one-hot and the MLP see the same columns: "
        f"best deep {d} {scores[d].mean:.3f}, best classical {c} {scores[c].mean:.3f} "
        f"({scores[d].mean - scores[c].mean:+.3f}). On tables the guide's 'understand the "
        "features and how to represent them' is work the service now does for either."
    )


def engineering_row(m: Measurements) -> RowVerdict:
    row = RowVerdict(
        "Engineering",
        "you need to understand the basic functionality of the data",
        "you need to understand the features and how to represent them",
        DEPENDS,
        "",
    )
    row.rule = (
        "Partly not measurable (what a person must understand). Proxy: on image datasets both "
        "paradigms get raw pixels and no hand-made features; held if the best deep model beats "
        f"the best classical by more than {ENGINEERING_GAP_HELD} (classical lacks features the "
        f"network learns from the image structure), did not hold if by {ENGINEERING_GAP_NOT} "
        "or less (classical needed no feature work), depends in between or with no image data. "
        "Where the plan has classical models on hand-made image features (+hog) it is measured "
        "directly: held if the features lift classical by more than "
        f"{ENGINEERING_GAP_HELD} and deep on raw pixels does as well, did not hold if they lift "
        f"it by {ENGINEERING_GAP_NOT} or less."
    )
    steps: dict[str, set[str]] = defaultdict(set)
    for r in m.runs:
        if r.ok and r.paradigm == CLASSICAL and r.preprocessing:
            steps[r.algorithm].update(r.preprocessing)
    classical_algorithms = sorted({r.algorithm for r in m.runs if r.ok and r.paradigm == CLASSICAL})
    if classical_algorithms:
        described = ", ".join(
            f"{a} ({'; '.join(sorted(steps[a])) if steps[a] else 'none'})"
            for a in classical_algorithms
        )
        row.evidence.append(f"Pre-processing the classical pipelines reported: {described}.")
    row.evidence.append(
        "Deep pipelines: standardization inside the network (learned mean and std, exported "
        "with it) and a validation split; the CNN also reshapes each row to the image shape, "
        "which it needs to know. Neither paradigm got hand-made features."
    )
    per_dataset, keys = [], []
    for dataset in datasets_measured(m):
        kind = m.datasets.get(dataset, {}).get("data_kind", "")
        if kind == "text":
            _text_engineering(m, dataset, row)
            continue
        if m.datasets.get(dataset, {}).get("column_kinds"):
            _table_engineering(m, dataset, row)
        if not m.datasets.get(dataset, {}).get("image_shape"):
            continue
        direct = _features_engineering(m, dataset, row)
        if direct is not None:
            per_dataset.append(direct[0])
            keys.append(direct[1])
            continue
        scores = full_scores(m, dataset)
        c, d = best_of(m, scores, CLASSICAL), best_of(m, scores, DEEP)
        if c is None or d is None:
            continue
        gap = scores[d].mean - scores[c].mean
        verdict = (
            HELD
            if gap > ENGINEERING_GAP_HELD
            else NOT_HELD
            if gap <= ENGINEERING_GAP_NOT
            else DEPENDS
        )
        per_dataset.append(verdict)
        keys.append(f"{dataset}: deep - classical on raw pixels {gap:+.3f}")
        row.evidence.append(
            f"{dataset} (raw {m.datasets[dataset]['image_shape']} pixels): best deep {d} "
            f"{scores[d].mean:.3f}, best classical {c} {scores[c].mean:.3f} → {verdict}. "
            "The pixels are the representation the dataset ships (someone chose it: digits' "
            "8x8 pixels are block counts of 32x32 bitmaps); the proxy cannot see that work."
        )
    if not per_dataset:
        row.key = "no image dataset measured"
        return row
    row.verdict = aggregate(per_dataset)
    proxied = any("raw pixels" in key for key in keys)
    row.key = "; ".join(keys) + (
        " (proxy where no hand-made features were trained)" if proxied else ""
    )
    return row


def _fit_table(m: Measurements, dataset: str) -> dict[str, float]:
    fits: dict[str, list[float]] = defaultdict(list)
    for r in _default_runs(m, dataset):
        if r.size == FULL and "fit_seconds" in r.metrics:
            fits[r.algorithm].append(r.metrics["fit_seconds"])
    return {a: statistics.fmean(v) for a, v in fits.items()}


def training_time_row(m: Measurements) -> RowVerdict:
    row = RowVerdict("Training time", "usually longer", "less", DEPENDS, "")
    row.rule = (
        "Every (deep, classical) pair of algorithms on each dataset at the full training "
        "split, by mean fit seconds over seeds: held if the deep one is slower in at least "
        f"{SLOWER_SHARE_HELD:.0%} of pairs, did not hold if in at most "
        f"{SLOWER_SHARE_NOT:.0%}, depends in between."
    )
    slower, ratios = 0, []
    for dataset in datasets_measured(m):
        fits = _fit_table(m, dataset)
        deep = {a: f for a, f in fits.items() if m.paradigm_of(a) == DEEP}
        classical = {a: f for a, f in fits.items() if m.paradigm_of(a) == CLASSICAL}
        for df in deep.values():
            for cf in classical.values():
                slower += df > cf
                ratios.append(df / cf if cf > 0 else math.inf)
        if deep and classical:
            shown = ", ".join(f"{a} {f:.3g} s" for a, f in sorted(fits.items(), key=lambda t: t[1]))
            row.evidence.append(f"{dataset} fit seconds: {shown}.")
    if not ratios:
        row.key = "not measured"
        return row
    share = slower / len(ratios)
    median = statistics.median(ratios)
    row.verdict = (
        HELD if share >= SLOWER_SHARE_HELD else NOT_HELD if share <= SLOWER_SHARE_NOT else DEPENDS
    )
    row.key = f"deep slower in {slower}/{len(ratios)} pairs; median deep/classical {median:.3g}x"
    worker = defaultdict(list)
    for r in _default_runs(m):
        if r.size == FULL and "device_seconds" in r.cost:
            worker[r.paradigm].append(float(r.cost["device_seconds"]))
    if worker:
        row.evidence.append(
            "Whole training job (worker CPU-s, imports and export included), mean: "
            + ", ".join(f"{p} {statistics.fmean(v):.2f}" for p, v in sorted(worker.items()))
            + "."
        )
    return row


@dataclass(frozen=True)
class TuningResult:
    algorithm: str
    paradigm: str
    dataset: str
    dims: int
    continuous: int
    log10_discrete: float
    trials: int
    best_params: dict[str, object] | None
    search_best: float | None
    search_default: float | None
    held_out_best: Summary
    held_out_default: Summary
    cpu_seconds: float
    dollars: float

    @property
    def gain(self) -> float | None:
        if not self.held_out_best.n or not self.held_out_default.n:
            return None
        return self.held_out_best.mean - self.held_out_default.mean


def tuning_results(m: Measurements) -> list[TuningResult]:
    results = []
    for record in m.tuning:
        algorithm, dataset = record["algorithm"], record["dataset"]
        tuned = [
            r
            for r in m.runs
            if r.ok and r.purpose == "tune" and r.algorithm == algorithm and r.dataset == dataset
        ]
        search = [r for r in tuned if r.seed == record["search_seed"]]
        best = record.get("best_trial")
        defaults = {r.seed: r.score() for r in full_runs(m, dataset, algorithm)}
        held_out_default = [
            v for s, v in defaults.items() if s in record["held_out_seeds"] and v is not None
        ]
        if best == -1:  # no trial beat the defaults on the search split: they stay
            held_out_best = list(held_out_default)
        else:
            held_out_best = [
                r.score() or 0.0
                for r in tuned
                if r.trial == best and r.seed in record["held_out_seeds"]
            ]
        space = record["space"]
        results.append(
            TuningResult(
                algorithm=algorithm,
                paradigm=record["paradigm"],
                dataset=dataset,
                dims=int(space["dims"]),
                continuous=int(space["continuous"]),
                log10_discrete=float(space["log10_discrete"]),
                trials=int(record["trials"]),
                best_params=record.get("best_params"),
                search_best=max((r.score() or 0.0 for r in search), default=None),
                search_default=defaults.get(record["search_seed"]),
                held_out_best=summarize(held_out_best),
                held_out_default=summarize(held_out_default),
                cpu_seconds=sum(float(r.cost.get("device_seconds", 0.0)) for r in tuned),
                dollars=sum(float(r.cost.get("dollars", 0.0)) for r in tuned),
            )
        )
    return results


def catalog_dims(m: Measurements) -> dict[str, list[int]]:
    dims: dict[str, list[int]] = defaultdict(list)
    for entry in m.catalog:
        dims[entry["paradigm"]].append(space_size(entry)["dims"])
    return dict(dims)


def tuning_row(m: Measurements) -> RowVerdict:
    row = RowVerdict(
        "Tuning", "can be tuned in numerous ways", "limited tuning capabilities", DEPENDS, ""
    )
    row.rule = (
        "Two parts. Space: deep algorithms expose on average ≥ "
        f"{TUNING_DIMS_RATIO:g}x the hyperparameters of classical ones (catalog). Effect: the "
        "best held-out gain of a budgeted random search over defaults is at least as large "
        "for deep as for classical. Held if both, did not hold if neither, depends otherwise "
        "(or when the search could not be measured)."
    )
    dims = catalog_dims(m)
    if not dims.get(DEEP) or not dims.get(CLASSICAL):
        row.key = "catalog lacks a paradigm"
        return row
    deep_dims, classical_dims = statistics.fmean(dims[DEEP]), statistics.fmean(dims[CLASSICAL])
    ratio = deep_dims / classical_dims if classical_dims else math.inf
    space_part = ratio >= TUNING_DIMS_RATIO
    row.evidence.append(
        f"Catalog: deep algorithms have {deep_dims:.1f} hyperparameters on average, classical "
        f"{classical_dims:.1f} ({ratio:.2g}x)."
    )
    gains: dict[str, float] = {}
    for t in tuning_results(m):
        gain = t.gain
        if gain is None:
            continue
        gains[t.paradigm] = max(gains.get(t.paradigm, -math.inf), gain)
        per_minute = gain * 100 / (t.cpu_seconds / 60) if t.cpu_seconds else math.nan
        row.evidence.append(
            f"{t.algorithm} ({t.paradigm}, {t.trials} trials on {t.dataset}): held-out "
            f"{t.held_out_best.mean:.3f} vs defaults {t.held_out_default.mean:.3f} "
            f"(gain {gain:+.3f}{'; no trial beat the defaults' if t.best_params == {} else ''}) "
            f"for {t.cpu_seconds:.0f} CPU-s, ${t.dollars:.5f} "
            f"= {per_minute:+.2f} points per CPU-minute."
        )
    effect_part: bool | None = None
    if CLASSICAL in gains and DEEP in gains:
        effect_part = gains[DEEP] >= gains[CLASSICAL]
    if effect_part is None:
        row.verdict = DEPENDS
    elif space_part and effect_part:
        row.verdict = HELD
    elif not space_part and not effect_part:
        row.verdict = NOT_HELD
    else:
        row.verdict = DEPENDS
    gain_text = (
        "search not measured"
        if effect_part is None
        else f"held-out gain deep {gains[DEEP]:+.3f} vs classical {gains[CLASSICAL]:+.3f}"
    )
    row.key = f"hyperparameters {deep_dims:.1f} vs {classical_dims:.1f} per algorithm; {gain_text}"
    return row


def processing_row(m: Measurements) -> RowVerdict:
    row = RowVerdict(
        "Processing time", "hours to weeks of pre-processing", "seconds to hours", DEPENDS, ""
    )
    row.rule = (
        "Pre-processing seconds the training jobs reported (scaling, splitting, tensor "
        f"preparation). Held if a deep job's took ≥ {HOUR:g} s (hours) and no less than any "
        f"classical job's; did not hold if every deep job's took < {SECONDS_SCALE:g} s; "
        "depends in between. Human data preparation is not measured."
    )
    by_paradigm: dict[str, list[float]] = defaultdict(list)
    fits: dict[str, list[float]] = defaultdict(list)
    for r in m.runs:
        if r.ok and "preprocessing_seconds" in r.metrics:
            by_paradigm[r.paradigm].append(r.metrics["preprocessing_seconds"])
            fits[r.paradigm].append(r.metrics.get("fit_seconds", 0.0))
    if not by_paradigm.get(DEEP):
        row.key = "not measured"
        return row
    for paradigm in PARADIGMS:
        values = by_paradigm.get(paradigm)
        if values:
            share = sum(values) / sum(fits[paradigm]) if sum(fits[paradigm]) else math.nan
            row.evidence.append(
                f"{paradigm}: mean {statistics.fmean(values) * 1000:.2f} ms, max "
                f"{max(values) * 1000:.2f} ms over {len(values)} jobs ({share:.1%} of fit time)."
            )
    by_kind: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in m.runs:
        if r.ok and "preprocessing_seconds" in r.metrics:
            kind = m.datasets.get(r.dataset, {}).get("data_kind") or "arrays"
            by_kind[(kind, r.paradigm)].append(r.metrics["preprocessing_seconds"])
    if len({kind for kind, _ in by_kind}) > 1:
        shown = "; ".join(
            f"{kind} {paradigm} {statistics.fmean(v) * 1000:.1f} ms"
            for (kind, paradigm), v in sorted(by_kind.items())
        )
        row.evidence.append(f"Mean pre-processing per data kind and paradigm: {shown}.")
    generated = {
        d: i["generate_seconds"] for d, i in m.datasets.items() if i.get("generate_seconds")
    }
    for dataset, seconds in generated.items():
        row.evidence.append(
            f"Generating {dataset} (shared by both paradigms) took {seconds:.0f} s."
        )
    deep_max = max(by_paradigm[DEEP])
    classical_max = max(by_paradigm.get(CLASSICAL, [0.0]))
    if deep_max >= HOUR and deep_max >= classical_max:
        row.verdict = HELD
    elif deep_max < SECONDS_SCALE:
        row.verdict = NOT_HELD
    else:
        row.verdict = DEPENDS
    row.key = f"deep max {deep_max * 1000:.1f} ms, classical max {classical_max * 1000:.1f} ms"
    return row


def algorithms_row(m: Measurements, guide: dict[str, int] | None = None) -> RowVerdict:
    """`guide`: algorithms the guide names per paradigm (default: GUIDE_ALGORITHMS)."""
    row = RowVerdict("Algorithms", "fewer algorithms", "many algorithms", DEPENDS, "")
    row.rule = (
        "Counts of algorithms per paradigm, in this service's catalog and in the guide's own "
        f"lists: held if classical ≥ {ALGORITHMS_RATIO:g}x deep in both, did not hold if "
        "classical ≤ deep in both, depends otherwise. A catalog is a product choice, so this "
        "row is a count, not a law."
    )
    counts = {p: sum(1 for a in m.catalog if a["paradigm"] == p) for p in PARADIGMS}
    guide = guide or {p: len(GUIDE_ALGORITHMS[p]) for p in PARADIGMS}
    if not counts[DEEP] or not counts[CLASSICAL]:
        row.key = "catalog lacks a paradigm"
        return row

    def side(c: int, d: int) -> str:
        return HELD if c >= ALGORITHMS_RATIO * d else NOT_HELD if c <= d else DEPENDS

    ours, theirs = side(counts[CLASSICAL], counts[DEEP]), side(guide[CLASSICAL], guide[DEEP])
    row.verdict = ours if ours == theirs else DEPENDS
    names = {p: ", ".join(a["name"] for a in m.catalog if a["paradigm"] == p) for p in PARADIGMS}
    row.evidence.append(
        f"This catalog: {counts[CLASSICAL]} classical ({names[CLASSICAL]}), {counts[DEEP]} deep "
        f"({names[DEEP]}) → {ours}."
    )
    row.evidence.append(
        f"The guide names {guide[CLASSICAL]} classical and {guide[DEEP]} deep algorithms "
        f"→ {theirs}."
    )
    row.key = (
        f"catalog {counts[CLASSICAL]} classical vs {counts[DEEP]} deep; "
        f"guide {guide[CLASSICAL]} vs {guide[DEEP]}"
    )
    return row


def explanation_agreement(record: dict[str, Any]) -> float:
    """Spearman of native importances and permutation importances; NaN without native."""
    features = list(record.get("features") or [])
    pairs = [(f["importance_mean"], f["native"]) for f in features if f.get("native") is not None]
    if len(pairs) < 2:
        return math.nan
    return spearman([a for a, _ in pairs], [b for _, b in pairs])


def interpretation_row(m: Measurements) -> RowVerdict:
    row = RowVerdict(
        "Interpretation",
        "hard to interpret",
        "some algorithms easy, some hard to interpret",
        DEPENDS,
        "",
    )
    row.rule = (
        "Explain each model: held if no deep model has native importances (readable only "
        "through permutation) while a classical one does and its native ranking agrees with "
        f"its permutation ranking (Spearman ≥ {SPEARMAN_MIN}); did not hold if a deep model "
        "has native importances or no classical one does; depends otherwise (weak agreement, "
        "or not measured)."
    )
    ok = [e for e in m.explanations if "error" not in e]
    failed = [e for e in m.explanations if "error" in e]
    for e in failed:
        row.evidence.append(f"{e['algorithm']}: not explained ({e['error']}).")
    classical = [e for e in ok if e["paradigm"] == CLASSICAL]
    deep = [e for e in ok if e["paradigm"] == DEEP]
    for e in ok:
        top = ", ".join(f["feature"] for f in e["features"][:3])
        rho = explanation_agreement(e)
        agreement = "" if math.isnan(rho) else f"; native vs permutation Spearman {rho:.2f}"
        row.evidence.append(
            f"{e['algorithm']} ({e['paradigm']}): native {e['native_kind'] or 'none'}; top "
            f"features {top}{agreement}; {e['seconds']:.1f} s, {e['cost']['device_seconds']:.1f} "
            f"CPU-s, ${e['cost']['dollars']:.6f}."
        )
    if not classical or not deep:
        row.verdict = DEPENDS
        row.key = "not measured" + (f" ({failed[0]['error']})" if failed else "")
        return row
    deep_native = [e for e in deep if e["native_kind"]]
    classical_native = [e for e in classical if e["native_kind"]]
    rhos = [explanation_agreement(e) for e in classical_native]
    rho = max((r for r in rhos if not math.isnan(r)), default=math.nan)
    if deep_native or not classical_native:
        row.verdict = NOT_HELD
    else:
        row.verdict = HELD if not math.isnan(rho) and rho >= SPEARMAN_MIN else DEPENDS
    hard = [e["algorithm"] for e in classical if not e["native_kind"]]
    row.key = (
        f"native importances: classical {len(classical_native)}/{len(classical)}, deep "
        f"{len(deep_native)}/{len(deep)}; best agreement Spearman "
        + ("-" if math.isnan(rho) else f"{rho:.2f}")
        + (f"; classical without native: {', '.join(hard)}" if hard else "")
    )
    return row


ROWS: tuple[Callable[[Measurements], RowVerdict], ...] = (
    data_row,
    accuracy_row,
    hardware_row,
    engineering_row,
    training_time_row,
    tuning_row,
    processing_row,
    algorithms_row,
    interpretation_row,
)
ROW_NAMES = (
    "Data",
    "Accuracy",
    "Hardware",
    "Engineering",
    "Training time",
    "Tuning",
    "Processing time",
    "Algorithms",
    "Interpretation",
)


def all_rows(m: Measurements) -> list[RowVerdict]:
    return [rule(m) for rule in ROWS]

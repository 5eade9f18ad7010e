"""Classical models on the GPU: hummingbird's torch backend on CUDA vs ONNX Runtime's CPU.

    python -m clients.gpu_check.classical_gpu --out $OUT/gpu/classical-gpu.md
    python -m clients.gpu_check.classical_gpu --quick --out /tmp/classical.md   # CPU smoke

A RandomForest and a GradientBoosting classifier are trained on `make_classification`
(fixed seed, 100k rows; no download), exported with skl2onnx and timed in ONNX Runtime's
CPU tree operators (what the service serves today), then compiled to tensor operations by
hummingbird-ml (torch backend) and timed on CUDA, at batches of 1, 64 and 1024 rows. Each
figure is the median wall time of one predict_proba call from numpy in to numpy out, the
host-device copies included, as a server would pay them.

The rule: keep the hummingbird path only for a model where it beats ONNX Runtime on the CPU
at every batch size measured; otherwise classical models stay on the CPU. Without
hummingbird (or without CUDA), only the ONNX Runtime CPU figures are written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

BATCHES = (1, 64, 1024)


@dataclass
class Row:
    model: str
    batch: int
    ort_cpu_ms: float
    hb_ms: float | None = None


@dataclass
class Result:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parity: dict[str, str] = field(default_factory=dict)


def _median_ms(fn: Callable[[], object], budget_s: float, max_iters: int) -> float:
    for _ in range(3):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < max_iters and (len(times) < 5 or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _hummingbird(device: str) -> tuple[Any, str]:
    """(hummingbird.ml module or None, why not)."""
    try:
        import hummingbird.ml as hb
    except ImportError as exc:
        return None, f"hummingbird not installed ({exc})"
    try:
        import torch
    except ImportError as exc:
        return None, f"torch not installed ({exc})"
    if device == "cuda" and not torch.cuda.is_available():
        return None, "hummingbird installed, but no CUDA device: its path is not timed"
    return hb, ""


def measure(rows: int, trees: int, budget_s: float, max_iters: int, device: str) -> Result:
    import onnxruntime as ort
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import make_classification
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    result = Result()
    features = 28
    X, y = make_classification(
        n_samples=rows,
        n_features=features,
        n_informative=14,
        n_classes=2,
        random_state=0,
    )
    X = X.astype(np.float32)
    hb, why_not = _hummingbird(device)
    if why_not:
        result.notes.append(why_not)
    models = {
        f"RandomForest ({trees} trees, depth 12)": RandomForestClassifier(
            n_estimators=trees, max_depth=12, n_jobs=-1, random_state=0
        ),
        # max_features="sqrt": the same shape of model (trees, depth) trained ~5x sooner.
        f"GradientBoosting ({trees} trees, depth 3)": GradientBoostingClassifier(
            n_estimators=trees, max_depth=3, max_features="sqrt", random_state=0
        ),
    }
    rng = np.random.default_rng(0)
    for label, model in models.items():
        started = time.perf_counter()
        model.fit(X, y)
        result.notes.append(
            f"{label}: trained on {rows} rows in {time.perf_counter() - started:.1f} s"
        )
        onx = convert_sklearn(
            model,
            initial_types=[("X", FloatTensorType([None, features]))],
            options={id(model): {"zipmap": False}},
        )
        session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
        probe = X[:1024]
        expected = model.predict_proba(probe)
        ort_proba = session.run(None, {"X": probe})[1]
        parity = f"ORT CPU max |p - sklearn| = {np.abs(ort_proba - expected).max():.2e}"
        compiled = None
        if hb is not None:
            compiled = hb.convert(model, "torch").to(device)
            hb_proba = compiled.predict_proba(probe)
            error = np.abs(hb_proba - expected).max()
            parity += f"; hummingbird {device} max |p - sklearn| = {error:.2e}"
        result.parity[label] = parity
        for batch in BATCHES:
            idx = rng.integers(0, rows, size=batch)
            xb = np.ascontiguousarray(X[idx])
            row = Row(
                label,
                batch,
                _median_ms(partial(session.run, None, {"X": xb}), budget_s, max_iters),
            )
            if compiled is not None:
                row.hb_ms = _median_ms(partial(compiled.predict_proba, xb), budget_s, max_iters)
            result.rows.append(row)
    return result


def verdicts(result: Result) -> list[str]:
    lines = []
    for label in dict.fromkeys(r.model for r in result.rows):
        rows = [r for r in result.rows if r.model == label]
        if any(r.hb_ms is None for r in rows):
            lines.append(f"- {label}: not compared (no hummingbird figures): stays on CPU.")
            continue
        wins = [r.batch for r in rows if r.hb_ms is not None and r.hb_ms < r.ort_cpu_ms]
        if len(wins) == len(rows):
            lines.append(f"- {label}: hummingbird beats ORT CPU at every batch: KEEP it.")
        elif wins:
            lines.append(
                f"- {label}: hummingbird wins only at batch {', '.join(map(str, wins))}:"
                " not kept; classical stays on CPU."
            )
        else:
            lines.append(f"- {label}: ORT CPU is faster at every batch: classical stays on CPU.")
    return lines


def render(result: Result, args: argparse.Namespace) -> str:
    device = "no CUDA device"
    try:
        import torch

        if torch.cuda.is_available():
            device = torch.cuda.get_device_name(0)
    except ImportError:
        device = "torch not installed"
    import onnxruntime as ort

    out = [
        "# Classical models on the GPU (hummingbird) vs ONNX Runtime on the CPU",
        "",
        f"Date (UTC): {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}; GPU: {device};"
        f" CPU cores: {os.cpu_count()}; onnxruntime {ort.__version__}"
        f" ({'quick smoke run, not a measurement' if args.quick else 'full run'}).",
        "",
        "Command: `python -m clients.gpu_check.classical_gpu"
        + (" --quick" if args.quick else "")
        + "`. Median wall time of one predict_proba call, numpy in and out (copies included).",
        "",
        f"| model | batch | ORT CPU ms | hummingbird {args.hb_device} ms | rows/s ORT CPU"
        " | rows/s hummingbird |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in result.rows:
        hb = "n/a" if r.hb_ms is None else f"{r.hb_ms:.3f}"
        hb_rate = "n/a" if r.hb_ms is None else f"{r.batch / r.hb_ms * 1e3:,.0f}"
        out.append(
            f"| {r.model} | {r.batch} | {r.ort_cpu_ms:.3f} | {hb} |"
            f" {r.batch / r.ort_cpu_ms * 1e3:,.0f} | {hb_rate} |"
        )
    out += ["", "## Verdict", "", *verdicts(result), ""]
    out += ["Rule: keep the hummingbird path only where it beats ORT CPU; else CPU.", ""]
    out += ["## Notes", "", *(f"- {n}" for n in result.notes)]
    out += [f"- {label}: {p}" for label, p in result.parity.items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, help="markdown table (default: stdout only)")
    parser.add_argument("--quick", action="store_true", help="2,000 rows, 10 trees: a smoke run")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument(
        "--hb-device", choices=["cuda", "cpu"], default="cuda", help="cpu: test the path only"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.trees = 2_000, 10
    budget_s, max_iters = (0.05, 20) if args.quick else (1.0, 2000)
    result = measure(args.rows, args.trees, budget_s, max_iters, args.hb_device)
    text = render(result, args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The hardware limit: ONNX Runtime called in-process on one ONNX file, no server at all.

Same session settings as the bare server and our server (CPU execution provider, one
intra-op thread, all graph optimizations, sequential execution), so the figures say what
one core spends on the model itself at a given batch.

    python -m clients.bench.inprocess model.onnx --batch 1 --batch 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

#: ONNX Runtime's tensor type names -> numpy dtypes, for the inputs we build.
_ORT_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def session_options(intra_op_threads: int = 1) -> ort.SessionOptions:
    """The settings every limit uses: 1 intra-op thread, full optimization, sequential."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def load_session(path: str | Path, intra_op_threads: int = 1) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(path),
        sess_options=session_options(intra_op_threads),
        providers=["CPUExecutionProvider"],
    )


def random_feeds(session: ort.InferenceSession, batch: int, seed: int = 0) -> dict[str, Any]:
    """Uniform [0, 1) inputs with every symbolic dimension set to `batch`."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, Any] = {}
    for node in session.get_inputs():
        shape = tuple(d if isinstance(d, int) and d > 0 else batch for d in node.shape)
        dtype = _ORT_NUMPY.get(node.type)
        if dtype is None:
            raise ValueError(f"input {node.name!r}: type {node.type} is not supported here")
        feeds[node.name] = rng.random(shape).astype(dtype)
    return feeds


@dataclass
class InProcessResult:
    """Timing of `session.run` at one batch size on one thread."""

    batch: int
    runs: int
    median_us: float
    p99_us: float
    rows_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(
    path: str | Path,
    batch: int,
    *,
    seconds: float = 2.0,
    min_runs: int = 50,
    warmup_runs: int = 20,
    session: ort.InferenceSession | None = None,
) -> InProcessResult:
    """Times single runs back to back for about `seconds`; median µs and rows/s."""
    session = session or load_session(path)
    feeds = random_feeds(session, batch)
    for _ in range(warmup_runs):
        session.run(None, feeds)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < deadline:
        started = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    p99 = float(np.percentile(times, 99))
    return InProcessResult(
        batch=batch,
        runs=len(times),
        median_us=median * 1e6,
        p99_us=p99 * 1e6,
        rows_per_s=batch / median,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clients.bench.inprocess",
        description="In-process ONNX Runtime timing of one ONNX file (the hardware limit).",
    )
    parser.add_argument("model", type=Path)
    parser.add_argument("--batch", type=int, action="append", help="repeat for more (default 1)")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    session = load_session(args.model)
    results = [
        measure(args.model, batch, seconds=args.seconds, session=session).to_dict()
        for batch in args.batch or [1]
    ]
    json.dump(results, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

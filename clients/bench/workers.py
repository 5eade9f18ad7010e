"""Serving processes: throughput and p99 of `--workers N` against one process, in one run.

`python -m clients.bench.workers` (part of `make bench`): trains digits logistic regression
once, then serves it from `paradigm-server --workers N` for each N, and drives batch-1
ModelInfer at each concurrency with one TCP connection per stream (as that many separate
clients would: the kernel spreads connections, not requests, over the workers). Server CPU
is the whole process tree's (supervisor and workers). Issue 16's goal: >= 0.8 x N times one
worker's throughput while cores last; on a 2-core machine the load generator shares them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from clients.bench.load import InputSpec, LoadResult, ProcessTreeCpu, make_request, run_load
from clients.bench.run import wait_models_ready
from clients.client import ParadigmClient
from clients.harness import paradigm_server
from clients.machine import machine_info

MODEL = "digits-logistic_regression"
INPUT = InputSpec("input", "FP32", (1, 64))
DEFAULT_OUT = Path("docs/benchmarks")


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def measure(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    data_dir = workdir / "data"
    with (
        paradigm_server(workdir, "train", data_dir) as server,
        ParadigmClient(server.target, timeout=600) as client,
    ):
        client.wait_for_job(client.start_training("digits", "logistic_regression").id)
    request = make_request(MODEL, [INPUT])
    points = []
    for workers in args.workers:
        name = f"workers-{workers}"
        with paradigm_server(workdir, name, data_dir, args=["--workers", str(workers)]) as server:
            wait_models_ready(server.target, [MODEL])
            for concurrency in args.concurrency:
                result: LoadResult = run_load(
                    server.target,
                    MODEL,
                    request,
                    rows_per_request=1,
                    concurrency=concurrency,
                    duration_s=args.duration,
                    warmup_s=args.warmup,
                    processes=args.processes,
                    connections=concurrency,
                    probes=[ProcessTreeCpu("server", server.pid)],
                )
                server_cpu = result.observed.get("server_cpu_s_per_s", 0.0)
                point = {
                    "workers": workers,
                    "concurrency": concurrency,
                    "throughput_rps": result.throughput_rps,
                    "p50_ms": result.latency_ms.get("p50"),
                    "p99_ms": result.latency_ms.get("p99"),
                    "errors": result.error_count,
                    "server_cpu_s_per_s": server_cpu,
                    "server_cpu_ms_per_request": 1e3 * server_cpu / result.throughput_rps
                    if result.throughput_rps
                    else None,
                    "client_cpu_s_per_s": result.client_cpu_s_per_s,
                    "system_cpu_s_per_s": result.observed.get("system_cpu_s_per_s"),
                }
                print(
                    f"  workers={workers} c={concurrency}: {point['throughput_rps']:.0f} req/s, "
                    f"p99 {point['p99_ms']:.2f} ms, server {server_cpu:.2f} cores",
                    flush=True,
                )
                points.append(point)
    return points


def markdown(points: list[dict[str, Any]], machine: dict[str, Any], command: str) -> str:
    single = {p["concurrency"]: p for p in points if p["workers"] == 1}
    lines = [
        "# Serving processes: `--workers N` against one process",
        "",
        f"Command: `{command}`. Machine: {machine.get('cpu', '?')}, "
        f"{machine.get('cores', os.cpu_count())} cores, load generator on the same cores. "
        "Batch-1 digits logistic regression, closed loop, one TCP connection per stream.",
        "",
        "| workers | c | req/s | x 1 worker | goal (0.8 x N) | p50 ms | p99 ms | server cores | "
        "server ms CPU / req | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        base = single.get(p["concurrency"])
        ratio = p["throughput_rps"] / base["throughput_rps"] if base else None
        lines.append(
            f"| {p['workers']} | {p['concurrency']} | {p['throughput_rps']:.0f} | "
            f"{'' if ratio is None else f'{ratio:.2f}'} | {0.8 * p['workers']:.1f} | "
            f"{p['p50_ms']:.2f} | {p['p99_ms']:.2f} | {p['server_cpu_s_per_s']:.2f} | "
            f"{p['server_cpu_ms_per_request']:.3f} | {p['errors']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=_numbers, default=[1, 2])
    parser.add_argument("--concurrency", type=_numbers, default=[16, 64])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--name", default="workers-cpu")
    args = parser.parse_args(argv)
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="paradigm-workers-") as workdir:
        points = measure(args, Path(workdir))
    given = sys.argv[1:] if argv is None else argv
    command = "python -m clients.bench.workers " + " ".join(given)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(
        json.dumps({"machine": machine, "points": points}, indent=2) + "\n"
    )
    (args.out / f"{args.name}.md").write_text(markdown(points, machine, command.strip()))
    print(f"wrote {args.out / args.name}.md")


if __name__ == "__main__":
    main()

"""Run NVIDIA's perf_analyzer against each server and write one markdown table of its view.

perf_analyzer is Triton's own load tool, written in C++; it shares no code with our driver
(clients/bench/load.py), so where both agree on Paradigm's throughput and latency neither
is measuring itself. Standard library only, so any Python runs it:

    python clients/bench/peers/perf.py --perf-analyzer .venv-perf/bin/perf_analyzer \
        --lib-dir .venv-perf/lib/python3.11/site-packages/nvidia/cuda_runtime/lib \
        --server paradigm=127.0.0.1:8001:digits-logistic \
        --server mlserver=127.0.0.1:8101:digits-logistic:input \
        --concurrency 1,4,16 --interval-ms 5000 --work-dir /tmp/x \
        --out docs/benchmarks/peers/perf_analyzer.md

A server spec is NAME=HOST:PORT:MODEL[:INPUT]. With INPUT, `--shape INPUT:1,64` is passed
(MLServer declares [-1, 64], a variable batch); without it none is (Paradigm's ModelConfig
gives max_batch_size and fixed dims [64], and perf_analyzer ignores --shape for fixed dims).
A server perf_analyzer cannot measure gets its error in the table instead of numbers.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

N_FEATURES = 64


@dataclass(frozen=True)
class Server:
    name: str
    host_port: str
    model: str
    input: str | None

    @classmethod
    def parse(cls, text: str) -> Server:
        name, sep, rest = text.partition("=")
        parts = rest.split(":")
        if not sep or len(parts) not in (3, 4):
            raise argparse.ArgumentTypeError(f"expected NAME=HOST:PORT:MODEL[:INPUT], got {text}")
        return cls(name, f"{parts[0]}:{parts[1]}", parts[2], parts[3] if len(parts) == 4 else None)


@dataclass
class Outcome:
    server: Server
    commands: list[list[str]] = field(default_factory=list)
    rows: list[dict[str, float]] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0


def command_for(
    args: argparse.Namespace, server: Server, concurrency: int, stability: int, csv_path: Path
) -> list[str]:
    command = [
        str(args.perf_analyzer),
        "-m", server.model,
        "-u", server.host_port,
        "-i", "grpc",
        "-b", "1",
        "--concurrency-range", str(concurrency),
        "--measurement-interval", str(args.interval_ms),
        "--stability-percentage", str(stability),
        "-f", str(csv_path),
    ]  # fmt: skip
    if server.input:
        command += ["--shape", f"{server.input}:1,{N_FEATURES}"]
    return command


def run_one(args: argparse.Namespace, server: Server) -> Outcome:
    """One perf_analyzer run per level: its --concurrency-range only steps linearly."""
    outcome = Outcome(server)
    env = dict(os.environ)
    # The binary links libcudart.so.12 even for CPU-only gRPC runs; the pip wheel
    # nvidia-cuda-runtime-cu12 provides it outside the default search path.
    env["LD_LIBRARY_PATH"] = ":".join(
        p for p in (str(args.lib_dir), env.get("LD_LIBRARY_PATH", "")) if p
    )
    started = time.monotonic()
    for concurrency in args.levels:
        # On a shared machine three windows in a row may not agree within perf_analyzer's
        # default 10 %; then the level is measured once more with a wider band, and the
        # table says so, rather than leaving a hole.
        for stability in (args.stability, args.retry_stability):
            stem = f"perf_analyzer-{server.name}-c{concurrency}"
            csv_path = args.work_dir / f"{stem}.csv"
            csv_path.unlink(missing_ok=True)
            command = command_for(args, server, concurrency, stability, csv_path)
            print(f"perf_analyzer -> {server.name} c={concurrency} ±{stability} %", flush=True)
            try:
                done = subprocess.run(
                    command, env=env, capture_output=True, text=True, timeout=args.timeout_s
                )
                output, status = done.stdout + done.stderr, done.returncode
            except subprocess.TimeoutExpired:
                output, status = f"timed out after {args.timeout_s:.0f} s", -1
            (args.work_dir / f"{stem}-s{stability}.log").write_text(output)
            rows = parse_csv(csv_path) if csv_path.exists() else []
            if status == 0 and rows:
                break
            lines = [line.strip() for line in output.splitlines() if line.strip()]
            error = lines[-1] if lines else f"exit status {status}, no output"
            print(f"  {error}")
            if "stable measurement" not in error:
                break  # no config, server gone: a wider band would not help
        outcome.commands.append(command)
        if not rows:
            outcome.error = error
            if "stable measurement" not in error:
                break  # the next level would fail the same way
            continue
        for row in rows:
            row["stability"] = stability
        outcome.rows += rows
        row = rows[-1]
        print(f"  {row['Inferences/Second']:.0f} infer/s, p50 {_ms(row['p50 latency'])} ms")
    outcome.seconds = time.monotonic() - started
    return outcome


def parse_csv(path: Path) -> list[dict[str, float]]:
    """perf_analyzer's -f file: one row per concurrency, latencies in microseconds."""
    with path.open(newline="") as f:
        return [
            {key.strip(): float(value) for key, value in row.items() if value not in ("", None)}
            for row in csv.DictReader(f)
        ]


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def render(args: argparse.Namespace, outcomes: list[Outcome]) -> str:
    lines = [
        "# perf_analyzer's view",
        "",
        "Written by `make bench-peers` (clients/bench/peers/run.sh, perf.py). NVIDIA's "
        "perf_analyzer (tritonclient 2.51.0, C++) keeps N synchronous ModelInfer calls of "
        "one row (FP32 [1, 64]) in flight against each server over gRPC. It measures "
        "windows of --measurement-interval until three in a row agree within the last "
        f"column's band ({args.stability} %, or {args.retry_stability} % where a level did "
        f"not settle within {args.stability} %). "
        "It shares no code with our driver (clients/bench/load.py), so it is an outside "
        "check of the driver's numbers in [bench.md](bench.md). Latencies are its client-side "
        "round trips in ms.",
        "",
        f"Host: {_cpu_model()}, {os.cpu_count()} CPUs, {platform.platform()}; "
        f"written {time.strftime('%Y-%m-%d %H:%M %Z')}. perf_analyzer and the servers share "
        "these cores, so the load tool's own CPU is part of every number.",
        "",
        "| server | concurrency | throughput (infer/s) | p50 ms | p90 ms | p99 ms | band |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for outcome in outcomes:
        for row in outcome.rows:
            lines.append(
                f"| {outcome.server.name} | {int(row['Concurrency'])} "
                f"| {row['Inferences/Second']:.0f} | {_ms(row['p50 latency'])} "
                f"| {_ms(row['p90 latency'])} | {_ms(row['p99 latency'])} "
                f"| {row['stability']:.0f} % |"
            )
        if outcome.error:
            lines.append(f"| {outcome.server.name} | - | not measured: `{outcome.error}` | | | | |")
    lines += ["", "## Commands", ""]
    lines.append(
        "Run from the repository root with "
        f"`LD_LIBRARY_PATH={_relative(args.lib_dir)}` (perf_analyzer links libcudart.so.12, "
        "which the `nvidia-cuda-runtime-cu12` wheel provides, and Debian's `libb64-0d`). "
        "Ports are picked free on each run."
    )
    lines += ["", "```"]
    for outcome in outcomes:
        for full in outcome.commands:
            command = [_relative(Path(full[0])), *full[1:]]
            command[command.index("-f") + 1] = Path(full[command.index("-f") + 1]).name
            lines.append(shlex.join(command))
    lines += ["```", ""]
    notes = [o for o in outcomes if o.error]
    if notes:
        lines += ["## Not measured", ""]
        for outcome in notes:
            lines.append(f"- **{outcome.server.name}**: `{outcome.error}`")
            if "model config" in outcome.error:
                lines.append(
                    "  perf_analyzer's Triton mode reads the model's configuration "
                    "(`ModelConfig` over gRPC, `/v2/models/M/config` over HTTP) before it "
                    "sends anything, and there is no flag to skip that. It is a Triton "
                    "extension that MLServer does not implement (Paradigm does), so "
                    "perf_analyzer cannot drive MLServer directly; our driver, which needs "
                    "only ModelInfer, measures it in [bench.md](bench.md)."
                )
        lines.append("")
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--perf-analyzer", type=Path, required=True)
    parser.add_argument("--lib-dir", type=Path, required=True, help="holds libcudart.so.12")
    parser.add_argument("--server", type=Server.parse, action="append", required=True)
    parser.add_argument("--concurrency", default="1,4,16", help="levels, comma-separated")
    parser.add_argument("--interval-ms", type=int, default=5000)
    parser.add_argument("--stability", type=int, default=10, help="perf_analyzer's -s, in %%")
    parser.add_argument(
        "--retry-stability", type=int, default=25, help="-s for one retry of an unstable level"
    )
    parser.add_argument("--timeout-s", type=float, default=600, help="per perf_analyzer run")
    parser.add_argument("--work-dir", type=Path, required=True, help="CSV files and logs")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/peers/perf_analyzer.md"))
    args = parser.parse_args(argv)
    args.levels = sorted({int(c) for c in args.concurrency.split(",")})

    args.work_dir.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    outcomes = [run_one(args, server) for server in args.server]
    args.out.write_text(render(args, outcomes))
    print(f"wrote {args.out}")
    # Paradigm (the first server) must be measurable; a peer perf_analyzer cannot drive is
    # a finding, reported in the file, not a failure of the run.
    return 1 if outcomes[0].error else 0


if __name__ == "__main__":
    raise SystemExit(main())

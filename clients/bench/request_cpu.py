"""Server CPU per request: ours with tiny models on the event loop, ours with every run in
an inference thread, and the bare grpc.aio server, measured side by side.

`python -m clients.bench.request_cpu` (part of `make bench`): digits logistic regression,
batch 1, c=16, one load process. The three servers run at once and the rounds alternate
between them (A B C A B C ...), so that the machine's noise falls on all of them alike; the
figure is each server's median over the rounds of its CPU seconds per answered request.
Issue 16's target: ours <= the bare server's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from clients.bench.load import InputSpec, ProcessCpu, make_request, run_load
from clients.bench.run import bare_server, wait_models_ready
from clients.client import ParadigmClient
from clients.harness import paradigm_server
from clients.machine import machine_info

MODEL = "digits-logistic_regression"
INPUT = InputSpec("input", "FP32", (1, 64))
SERVERS = {
    "inline": "Paradigm, tiny models on the event loop (default)",
    "threads": "Paradigm, every run in a thread (PARADIGM_INLINE_RUN_US=0)",
    "bare": "bare grpc.aio + ORT (runs in a thread)",
}


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, list[dict[str, float]]]:
    data_dir = workdir / "data"
    with (
        paradigm_server(workdir, "train", data_dir) as server,
        ParadigmClient(server.target, timeout=600) as client,
    ):
        client.wait_for_job(client.start_training("digits", "logistic_regression").id)
    onnx = data_dir / "models" / MODEL / "1" / "model.onnx"
    request = make_request(MODEL, [INPUT])
    rounds: dict[str, list[dict[str, float]]] = {key: [] for key in SERVERS}
    with contextlib.ExitStack() as stack:
        targets: dict[str, tuple[str, int]] = {}
        for key, env in (("inline", {}), ("threads", {"PARADIGM_INLINE_RUN_US": "0"})):
            # Each its own copy of the data: two servers must not share one directory.
            copy = workdir / f"data-{key}"
            shutil.copytree(data_dir, copy)
            server = stack.enter_context(paradigm_server(workdir, key, copy, env=env))
            wait_models_ready(server.target, [MODEL])
            targets[key] = (server.target, server.pid)
        bare = stack.enter_context(bare_server(workdir, onnx, MODEL, "classical"))
        assert bare.pid is not None
        targets["bare"] = (bare.target, bare.pid)
        alternate_rounds(targets, request, args, rounds)
    return rounds


def alternate_rounds(
    targets: dict[str, tuple[str, int]],
    request: bytes,
    args: argparse.Namespace,
    rounds: dict[str, list[dict[str, float]]],
) -> None:
    """args.rounds rounds of batch-1 load on every (target, pid), each round starting with
    the next server so that none always follows the same one; appends each point (req/s,
    p99, server CPU ms per request, errors) to rounds[key]."""
    order = list(targets)
    for number in range(args.rounds):
        turn = number % len(order)
        for key in order[turn:] + order[:turn]:
            target, pid = targets[key]
            result = run_load(
                target,
                MODEL,
                request,
                rows_per_request=1,
                concurrency=args.concurrency,
                duration_s=args.duration,
                warmup_s=args.warmup,
                probes=[ProcessCpu("server", pid)],
            )
            cpu = result.observed.get("server_cpu_s_per_s", 0.0)
            point = {
                "throughput_rps": result.throughput_rps,
                "p99_ms": result.latency_ms.get("p99", 0.0),
                "server_cpu_ms_per_request": 1e3 * cpu / max(result.throughput_rps, 1e-9),
                "errors": result.error_count,
            }
            rounds[key].append(point)
            print(
                f"  round {number + 1} {key}: {point['throughput_rps']:.0f} req/s, "
                f"{point['server_cpu_ms_per_request']:.3f} ms CPU/req",
                flush=True,
            )


def summary(rounds: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        key: {
            field: statistics.median(point[field] for point in points)
            for field in ("throughput_rps", "p99_ms", "server_cpu_ms_per_request")
        }
        for key, points in rounds.items()
    }


def markdown(medians: dict[str, dict[str, float]], machine: dict[str, Any], args: Any) -> str:
    bare = medians["bare"]["server_cpu_ms_per_request"]
    lines = [
        "# Server CPU per request: ours against the bare grpc.aio server",
        "",
        f"Command: `python -m clients.bench.request_cpu --rounds {args.rounds} "
        f"--duration {args.duration:g}`. Machine: {machine.get('cpu', '?')}, "
        f"{machine.get('cores', '?')} cores. Digits logistic regression, batch 1, "
        f"c={args.concurrency}, rounds alternating between the servers; medians.",
        "",
        "| server | req/s | p99 ms | server CPU ms / request | / bare |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in SERVERS.items():
        m = medians[key]
        lines.append(
            f"| {label} | {m['throughput_rps']:.0f} | {m['p99_ms']:.2f} | "
            f"{m['server_cpu_ms_per_request']:.3f} | "
            f"{m['server_cpu_ms_per_request'] / bare:.2f} |"
        )
    ours = medians["inline"]["server_cpu_ms_per_request"]
    verdict = "PASS" if ours <= bare else "MISS"
    lines += ["", f"{verdict}: ours {ours:.3f} ms vs bare {bare:.3f} ms of server CPU per request."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--name", default="request-cpu")
    args = parser.parse_args(argv)
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="paradigm-request-cpu-") as workdir:
        rounds = measure(args, Path(workdir))
    medians = summary(rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(
        json.dumps({"machine": machine, "rounds": rounds, "medians": medians}, indent=2) + "\n"
    )
    text = markdown(medians, machine, args)
    (args.out / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

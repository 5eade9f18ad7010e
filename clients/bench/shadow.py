"""Shadow overhead: what a shadow at 100 % sampling adds to the primary's latency.

`python -m clients.bench.shadow` (or `make bench-shadow`), in one run on one server:

A digits logistic regression is served under two aliases of the same version: `plain`
(no shadow) and `shadowed` (a shadow at sample rate 1.0: the digits MLP by default, or
`--shadow cnn`). Closed-loop load at `--concurrency` (16) streams of batch-1 ModelInfer
requests goes to one alias, then the other, `--rounds` times each, alternating, so both
see the same machine state. Reported side by side: throughput, p50/p99 of each, the p99
ratio (target, issue 18: at most 1.05), and the shadow's own counts (sampled, shadowed,
dropped: under load the shadow gives way rather than queueing) from GetShadowReport.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from clients.bench.load import make_request_from, run_load
from clients.client import ParadigmClient
from clients.harness import paradigm_server
from clients.machine import machine_info

PRIMARY = "digits-logistic_regression"
PLAIN, SHADOWED = "plain", "shadowed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shadow", default="mlp", help="shadow algorithm on digits (mlp)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs of the shadow")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side")
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as workdir:
        root = Path(workdir)
        with (
            paradigm_server(root, "bench-shadow", root / "data") as server,
            ParadigmClient(server.target, timeout=600) as client,
        ):
            shadow = _prepare(client, args.shadow, args.epochs)
            metadata = client.model_metadata(PRIMARY)
            rows = np.random.default_rng(0).uniform(0, 16, (1, 64)).astype(np.float32)
            requests = {
                alias: make_request_from(PRIMARY, {metadata.inputs[0].name: rows}, version=alias)
                for alias in (PLAIN, SHADOWED)
            }
            rounds: dict[str, list[dict[str, Any]]] = {PLAIN: [], SHADOWED: []}
            for number in range(args.rounds):
                for alias in (PLAIN, SHADOWED) if number % 2 == 0 else (SHADOWED, PLAIN):
                    result = run_load(
                        server.target, PRIMARY, requests[alias], rows_per_request=1,
                        concurrency=args.concurrency, duration_s=args.duration,
                        processes=args.processes,
                    )  # fmt: skip
                    rounds[alias].append(
                        {
                            "rps": result.throughput_rps,
                            "p50_ms": result.latency_ms["p50"],
                            "p99_ms": result.latency_ms["p99"],
                            "errors": result.error_count,
                        }
                    )
                    print(
                        f"round {number + 1} {alias:9s} {result.throughput_rps:8.0f} req/s "
                        f"p50 {result.latency_ms['p50']:.3f} ms p99 "
                        f"{result.latency_ms['p99']:.3f} ms",
                        flush=True,
                    )
            report = client.shadow_report(PRIMARY, SHADOWED)
    summary = _summarize(rounds)
    (pair,) = report.pairs
    summary["shadow"] = {
        "model": shadow,
        "sampled": pair.sampled,
        "shadowed": pair.shadowed,
        "dropped": pair.dropped,
        "failed": pair.failed,
        "agreement": pair.agreement,
        "primary_p99_ms_server": pair.primary_figures.p99_seconds * 1e3,
        "shadow_p99_ms_server": pair.shadow_figures.p99_seconds * 1e3,
    }
    summary["machine"] = machine_info()
    summary["command"] = "python -m clients.bench.shadow " + " ".join(argv or [])
    print(_table(summary))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))
    return 0


def _prepare(client: ParadigmClient, algorithm: str, epochs: int) -> str:
    lr = client.start_training("digits", "logistic_regression", seed=0)
    options: dict[str, Any] = {"epochs": epochs} if algorithm in ("mlp", "cnn") else {}
    deep = client.start_training("digits", algorithm, seed=0, hyperparameters=options)
    client.wait_for_job(lr.id)
    client.wait_for_job(deep.id)
    shadow = f"digits-{algorithm}"
    client.set_alias(PRIMARY, "1", PLAIN)
    client.set_alias(PRIMARY, "1", SHADOWED)
    client.set_shadow(PRIMARY, SHADOWED, shadow, sample_rate=1.0)
    return shadow


def _summarize(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per side the median over rounds of each figure, and the ratios shadowed / plain."""
    sides = {
        alias: {key: float(np.median([r[key] for r in results])) for key in results[0]}
        for alias, results in rounds.items()
    }
    return {
        "rounds": rounds,
        "median": sides,
        "p99_ratio": sides[SHADOWED]["p99_ms"] / sides[PLAIN]["p99_ms"],
        "p50_ratio": sides[SHADOWED]["p50_ms"] / sides[PLAIN]["p50_ms"],
        "rps_ratio": sides[SHADOWED]["rps"] / sides[PLAIN]["rps"],
    }


def _table(summary: dict[str, Any]) -> str:
    lines = ["| alias | req/s | p50 ms | p99 ms |", "|---|---|---|---|"]
    for alias, side in summary["median"].items():
        lines.append(
            f"| {alias} | {side['rps']:.0f} | {side['p50_ms']:.3f} | {side['p99_ms']:.3f} |"
        )
    shadow = summary["shadow"]
    lines.append(
        f"\np99 ratio (shadowed / plain): {summary['p99_ratio']:.3f}; p50 ratio "
        f"{summary['p50_ratio']:.3f}; throughput ratio {summary['rps_ratio']:.3f}"
    )
    lines.append(
        f"shadow {shadow['model']}: {shadow['sampled']} sampled, {shadow['shadowed']} "
        f"shadowed, {shadow['dropped']} dropped, {shadow['failed']} failed; agreement "
        f"{shadow['agreement']:.4f}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

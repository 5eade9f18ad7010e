"""One deep training job, single-process and distributed (DDP), side by side.

    python -m clients.ddp_bench --json docs/benchmarks/ddp-cpu.json \\
        --markdown docs/benchmarks/ddp-cpu.md

Starts a real server (paradigm-server on port 0, a fresh data directory) for each torch
thread count, trains the same job (default: the guide's CNN on digits, seed 0) as each
configuration, and reports accuracy, fit seconds (the worker's own clock around the fit:
for DDP that includes torchrun's start and the ranks' torch imports), mean epoch seconds
(rank 0's) and wall seconds (StartTraining to SUCCEEDED, as a client sees it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from clients.cli import format_markdown
from clients.client import ParadigmClient
from clients.harness import paradigm_server
from clients.machine import cpu_model
from service.gen.paradigm.v1 import paradigm_pb2 as pb


@dataclass(frozen=True)
class Config:
    """One way to run the job: processes (DDP world size) x torch threads per process."""

    label: str
    world_size: int
    threads: int


CONFIGS = (
    Config("1 process, 1 thread", 1, 1),
    Config("1 process, 2 threads", 1, 2),
    Config("2 processes (DDP, gloo), 1 thread each", 2, 1),
)


@dataclass
class Run:
    config: str
    world_size: int
    threads: int
    repeat: int
    accuracy: float
    fit_seconds: float
    mean_epoch_seconds: float
    wall_seconds: float
    final_loss: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m clients.ddp_bench", description=__doc__)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--algorithm", default="cnn")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each configuration")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--markdown", type=Path, help="write the markdown table here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs: list[Run] = []
    # Other work on a shared machine shows here (2 cores: 2.0 is both busy).
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="paradigm-ddp-bench-") as tmp:
        workdir = Path(tmp)
        for threads in sorted({c.threads for c in CONFIGS}):
            env = {
                "PARADIGM_WORKER_BLAS_THREADS": str(threads),
                "PARADIGM_MAX_WORLD_SIZE": str(max(c.world_size for c in CONFIGS)),
                "PARADIGM_DISTRIBUTED_BACKEND": "gloo",
            }
            data_dir = workdir / f"data-{threads}"
            server = paradigm_server(
                workdir, f"paradigm-{threads}", data_dir, env=env, metrics=False
            )
            with server as srv, ParadigmClient(srv.target, timeout=600) as client:
                client.wait_until_ready(60)
                for config in (c for c in CONFIGS if c.threads == threads):
                    for repeat in range(args.repeats):
                        runs.append(_train(client, args, config, repeat))
                        print(_row_text(runs[-1]), file=sys.stderr, flush=True)
    report = _report(args, runs)
    report["machine"]["load_average_1m"] = {"start": load_before, "end": os.getloadavg()[0]}
    table = _markdown(runs)
    print(table)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(table)
    return 0


def _train(client: ParadigmClient, args: argparse.Namespace, config: Config, repeat: int) -> Run:
    events: list[pb.JobEvent] = []
    started = time.perf_counter()
    job = client.start_training(
        args.dataset,
        args.algorithm,
        hyperparameters={"epochs": args.epochs, "batch_size": args.batch_size},
        model_name=f"ddp-bench-{config.world_size}x{config.threads}",
        device="cpu",
        seed=args.seed,
        world_size=config.world_size,
    )
    done = client.wait_for_job(job.id, on_event=events.append)
    wall = time.perf_counter() - started
    epochs = [e for e in events if e.stage == "epoch"]
    return Run(
        config=config.label,
        world_size=config.world_size,
        threads=config.threads,
        repeat=repeat,
        accuracy=done.metrics["accuracy"],
        fit_seconds=done.metrics["fit_seconds"],
        mean_epoch_seconds=statistics.fmean(e.metrics["epoch_seconds"] for e in epochs),
        wall_seconds=wall,
        final_loss=epochs[-1].metrics["loss"],
    )


def _row_text(run: Run) -> str:
    return (
        f"{run.config} #{run.repeat}: accuracy {run.accuracy:.4f}, fit {run.fit_seconds:.2f} s, "
        f"epoch {run.mean_epoch_seconds:.3f} s, wall {run.wall_seconds:.2f} s"
    )


def _markdown(runs: list[Run]) -> str:
    """One row per configuration: the median of its repeats (accuracy: all the same seed)."""
    headers = (
        "configuration", "accuracy", "final train loss", "fit s", "mean epoch s", "wall s",
        "runs",
    )  # fmt: skip
    rows = []
    for config in CONFIGS:
        mine = [r for r in runs if r.config == config.label]
        if not mine:
            continue
        rows.append(
            (
                config.label,
                "/".join(sorted({f"{r.accuracy:.4f}" for r in mine})),
                f"{statistics.median(r.final_loss for r in mine):.4f}",
                f"{statistics.median(r.fit_seconds for r in mine):.2f}",
                f"{statistics.median(r.mean_epoch_seconds for r in mine):.3f}",
                f"{statistics.median(r.wall_seconds for r in mine):.2f}",
                str(len(mine)),
            )
        )
    return format_markdown(headers, rows)


def _report(args: argparse.Namespace, runs: list[Run]) -> dict[str, Any]:
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m clients.ddp_bench " + " ".join(sys.argv[1:]),
        "machine": {
            "cpu": cpu_model() or platform.processor() or "unknown",
            "cores": os.cpu_count(),
            "gpu": "none (device cpu)",
            "backend": "gloo",
            "python": platform.python_version(),
            "torch": metadata.version("torch"),
        },
        "job": {
            "dataset": args.dataset,
            "algorithm": args.algorithm,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "seed": args.seed,
        },
        "runs": [asdict(run) for run in runs],
    }


if __name__ == "__main__":
    sys.exit(main())

"""What MLflow tracking costs a job: StartTraining to SUCCEEDED with tracking off, on, and
pointed at a tracking server that is down or hung.

`python -m clients.bench.mlflow_jobs` (or `make bench-mlflow`; needs `make tools` for the
MLflow server): a real `mlflow server` (SQLite, proxied artifacts) and four Paradigm
servers, started side by side: tracking off; on; at a port where nothing listens (down);
at a socket that accepts connections and never answers (hung, with a 1 s tracking
timeout). Jobs go to the four in turn, so the machine's noise falls on all of them alike;
each figure is the median of REPEATS iris jobs, and its ratio to tracking off.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clients.bench.jobs import wait_warm
from clients.client import ParadigmClient
from clients.harness import paradigm_server
from clients.machine import machine_info
from clients.mlflow_server import MLFLOW, NOT_INSTALLED, MlflowServer, free_port

ALGORITHMS = ("logistic_regression", "mlp")
HUNG_TIMEOUT_S = 1.0


@contextlib.contextmanager
def hung_server() -> Iterator[str]:
    """A socket that accepts connections (the kernel does, into its backlog) but never
    answers: every tracking call runs into its timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def measure(workdir: Path, repeats: int) -> dict[str, Any]:
    tracking = MlflowServer(workdir / "mlflow")
    (workdir / "mlflow").mkdir()
    tracking.start()
    try:
        with hung_server() as hung, contextlib.ExitStack() as stack:
            setups = {
                "off": {},
                "on": {"PARADIGM_MLFLOW_TRACKING_URI": tracking.url},
                "down": {"PARADIGM_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"},
                "hung": {
                    "PARADIGM_MLFLOW_TRACKING_URI": hung,
                    "PARADIGM_MLFLOW_TIMEOUT_SECONDS": str(HUNG_TIMEOUT_S),
                },
            }
            clients = {}
            for name, env in setups.items():
                server = stack.enter_context(
                    paradigm_server(workdir, f"mlflow-{name}", workdir / f"data-{name}", env=env)
                )
                wait_warm(server.log)
                clients[name] = stack.enter_context(ParadigmClient(server.target, timeout=600))
            walls: dict[str, dict[str, list[float]]] = {
                name: {algorithm: [] for algorithm in ALGORITHMS} for name in setups
            }
            for algorithm in ALGORITHMS:
                for _ in range(repeats):
                    for name, client in clients.items():
                        started = time.perf_counter()
                        client.wait_for_job(client.start_training("iris", algorithm, seed=0).id)
                        walls[name][algorithm].append(time.perf_counter() - started)
    finally:
        tracking.stop()
    medians = {
        name: {a: statistics.median(values) for a, values in by_algorithm.items()}
        for name, by_algorithm in walls.items()
    }
    return {
        name: {
            a: {"median_s": round(m, 3), "vs_off": round(m / medians["off"][a], 2)}
            for a, m in by_algorithm.items()
        }
        for name, by_algorithm in medians.items()
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# MLflow tracking: what it costs a job",
        "",
        f"`python -m clients.bench.mlflow_jobs` on {report['machine']['cpu']} "
        f"({report['machine']['cores']} cores), {report['when']}; iris, StartTraining to "
        f"SUCCEEDED, medians of {report['repeats']} jobs per cell, the four servers side "
        f"by side with jobs in turn; hung = tracking timeout {HUNG_TIMEOUT_S:g} s.",
        "",
        "| tracking | " + " | ".join(f"{a} s (x off)" for a in ALGORITHMS) + " |",
        "|---|" + "---:|" * len(ALGORITHMS),
    ]
    for name, by_algorithm in report["runs"].items():
        cells = [
            f"{by_algorithm[a]['median_s']} ({by_algorithm[a]['vs_off']}x)" for a in ALGORITHMS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args()
    if not MLFLOW.exists():
        raise SystemExit(NOT_INSTALLED)
    with tempfile.TemporaryDirectory(prefix="paradigm-mlflow-") as tmp:
        runs = measure(Path(tmp), args.repeats)
    report = {
        "machine": machine_info(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "repeats": args.repeats,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mlflow-jobs.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "mlflow-jobs.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

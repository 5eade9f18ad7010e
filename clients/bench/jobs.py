"""Small-job latency: StartTraining to SUCCEEDED with warm and with cold workers.

`python -m clients.bench.jobs` (or `make bench-jobs`): one server with warm workers (jobs
fork from a preloaded forkserver, the default) and one with PARADIGM_WARM_WORKERS=false
(each job a fresh interpreter importing scikit-learn, torch and the exporters), one after the
other on this machine. For each: the median of REPEATS iris logistic_regression jobs and of
the mlp, each job's fit seconds beside its wall time, and a sequence of small
logistic-regression jobs against the sum of their fit times. Targets (issue 16): logistic
regression <= 0.3 s, mlp <= 1.5 s, a 100-job sequence <= 10x the sum of its fits.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from clients.client import ParadigmClient
from clients.harness import paradigm_server
from clients.machine import machine_info

WARM_READY = "warm workers ready"


def wait_warm(log: Path, timeout: float = 120.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if log.exists() and WARM_READY in log.read_text(errors="replace"):
            return time.monotonic() - started
        time.sleep(0.2)
    raise RuntimeError(f"no '{WARM_READY}' in {log} after {timeout:g} s")


def timed_jobs(client: ParadigmClient, algorithm: str, n: int) -> list[dict[str, float]]:
    runs = []
    for _ in range(n):
        started = time.perf_counter()
        job = client.wait_for_job(client.start_training("iris", algorithm, seed=0).id)
        wall = time.perf_counter() - started
        runs.append({"wall_s": wall, "fit_s": float(job.metrics["fit_seconds"])})
    return runs


def measure(workdir: Path, warm: bool, repeats: int, sequence: int) -> dict[str, Any]:
    name = "warm" if warm else "cold"
    env = {"PARADIGM_WARM_WORKERS": "true" if warm else "false"}
    with (
        paradigm_server(workdir, f"jobs-{name}", workdir / f"data-{name}", env=env) as server,
        ParadigmClient(server.target, timeout=600) as client,
    ):
        ready = wait_warm(server.log) if warm else 0.0
        lr = timed_jobs(client, "logistic_regression", repeats)
        mlp = timed_jobs(client, "mlp", repeats)
        started = time.perf_counter()
        chain = timed_jobs(client, "logistic_regression", sequence)
        chain_wall = time.perf_counter() - started
    fits = sum(run["fit_s"] for run in chain)
    return {
        "workers": name,
        "warm_ready_after_s": round(ready, 2),
        "lr_median_s": round(statistics.median(r["wall_s"] for r in lr), 3),
        "lr_fit_median_s": round(statistics.median(r["fit_s"] for r in lr), 4),
        "mlp_median_s": round(statistics.median(r["wall_s"] for r in mlp), 3),
        "mlp_fit_median_s": round(statistics.median(r["fit_s"] for r in mlp), 3),
        "sequence_jobs": sequence,
        "sequence_wall_s": round(chain_wall, 2),
        "sequence_fit_sum_s": round(fits, 3),
        "sequence_over_fits": round(chain_wall / fits, 1) if fits else None,
    }


def markdown(report: dict[str, Any]) -> str:
    rows = report["runs"]
    lines = [
        "# Small jobs: StartTraining to SUCCEEDED, warm and cold workers",
        "",
        f"`python -m clients.bench.jobs` on {report['machine']['cpu']} "
        f"({report['machine']['cores']} cores), {report['when']}; iris, medians of "
        f"{report['repeats']}.",
        "",
        "| workers | logistic_regression s (fit s) | mlp s (fit s) "
        "| N lr jobs in a row: wall s / sum of fits s |",
        "|---|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workers']} | {r['lr_median_s']} ({r['lr_fit_median_s']}) | "
            f"{r['mlp_median_s']} ({r['mlp_fit_median_s']}) | N={r['sequence_jobs']}: "
            f"{r['sequence_wall_s']} / {r['sequence_fit_sum_s']} = {r['sequence_over_fits']}x |"
        )
    warm = next(r for r in rows if r["workers"] == "warm")
    lines += [
        "",
        f"The warm fork server was ready {warm['warm_ready_after_s']} s after the server "
        "started (its preload runs beside serving; jobs before that spawn cold).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--sequence", type=int, default=100, help="lr jobs in a row (warm)")
    parser.add_argument("--cold-sequence", type=int, default=10, help="lr jobs in a row (cold)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paradigm-jobs-") as tmp:
        runs = [
            measure(Path(tmp), True, args.repeats, args.sequence),
            measure(Path(tmp), False, args.repeats, args.cold_sequence),
        ]
    report = {
        "machine": machine_info(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "repeats": args.repeats,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "jobs-cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "jobs-cpu.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

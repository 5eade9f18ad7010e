"""`paradigm compare` / `python -m clients.compare` / `make compare`: run, judge, report.

Starts its own paradigm-server (max_concurrent_jobs = the plan's parallel jobs, data in a
temporary directory) unless --target names a running one, runs the plan (learning curves,
CPU/GPU check, random search, explanations, serving load), then writes into --out:
report.md (the guide's table with evidence and verdicts), PNG plots and results.json.

    python -m clients.compare                       # the default run, ~6-9 min on 2 cores
    python -m clients.compare --full --out big/     # the 28x28 scale dataset, for a GPU box
    python -m clients.compare --target 127.0.0.1:8001
    python -m clients.compare --from-json compare-report/results.json   # re-judge, re-plot
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from clients.client import ParadigmClient, ParadigmClientError
from clients.compare import plots
from clients.compare.experiments import Runner
from clients.compare.plan import PLANS, Plan
from clients.compare.records import Measurements
from clients.compare.report import energy_sources, write_report
from clients.compare.verdicts import all_rows
from clients.harness import paradigm_server
from clients.machine import machine_info

DEFAULT_OUT = Path("compare-report")
REPO = Path(__file__).resolve().parents[2]


def _dirty() -> bool | None:
    """Whether the working tree differs from its commit (None when git cannot tell)."""
    try:
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=REPO,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(status.stdout.strip())


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Measure the guide's claims about deep vs classical learning; write a "
        "report with verdicts, plots and raw JSON.",
    )
    parser.add_argument("--target", help="use this running server (default: start one)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output directory (default %(default)s)"
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--full",
        action="store_true",
        help="the full run: 28x28 scale dataset up to 60 000 rows, 5 seeds (hours on a CPU)",
    )
    which.add_argument(
        "--plan",
        choices=sorted(PLANS),
        default="default",
        help="default: make compare's; full: as --full; tiny: the test's (seconds)",
    )
    parser.add_argument("--seeds", type=int, help="number of seeds (default: the plan's)")
    parser.add_argument("--jobs", type=int, help="training jobs at once (default: the plan's, 2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--keep", action="store_true", help="keep the started server's data")
    parser.add_argument(
        "--cleanup", action="store_true", help="with --target: delete the models it published"
    )
    parser.add_argument(
        "--from-json", type=Path, metavar="RESULTS", help="rebuild report and plots from JSON"
    )
    return parser


def choose_plan(args: argparse.Namespace) -> Plan:
    plan = PLANS["full" if args.full else args.plan]()
    if args.seeds is not None:
        if args.seeds < 1:
            raise ValueError("--seeds must be at least 1")
        plan = replace(plan, seeds=tuple(range(args.seeds)))
    if args.jobs is not None:
        if args.jobs < 1:
            raise ValueError("--jobs must be at least 1")
        plan = replace(plan, parallel_jobs=args.jobs)
    return plan


def measure(
    client: ParadigmClient, target: str, plan: Plan, m: Measurements, *, progress: bool
) -> Runner:
    client.wait_until_ready(60)
    metadata = client.server_metadata()
    m.meta["server"] = f"{metadata.name} {metadata.version} at {target}"
    runner = Runner(client, target, plan, m, progress=progress)
    phases = m.meta.setdefault("phase_seconds", {})
    for phase in (runner.setup, runner.learning_curves, runner.hardware, runner.tune,
                  runner.explain, runner.serve, runner.cascades):  # fmt: skip
        started = time.monotonic()
        phase()
        phases[phase.__name__] = round(time.monotonic() - started, 1)
    return runner


def docs_link(out: Path) -> str:
    """Where docs/compare.md is, relative to the report (absolute outside the repository)."""
    target = REPO / "docs" / "compare.md"
    with contextlib.suppress(ValueError):
        out.resolve().relative_to(REPO)
        return os.path.relpath(target, out.resolve())
    return str(target)


def write_outputs(m: Measurements, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rows = all_rows(m)
    m.meta["verdicts"] = {row.row: row.verdict for row in rows}
    m.write(out / "results.json")
    figures = plots.draw_all(m, out)
    report = out / "report.md"
    write_report(m, rows, figures, report, docs_link(out))
    return report


def run(args: argparse.Namespace, command: str) -> int:
    if args.from_json is not None:
        m = Measurements.read(args.from_json)
        report = write_outputs(m, args.out)
        print(f"wrote {report}")
        return 0
    plan = choose_plan(args)
    started = time.monotonic()
    m = Measurements(
        meta={
            "command": command,
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "plan": plan.to_dict(),
            "machine": machine_info(),
            "uncommitted_changes": _dirty(),
        }
    )
    workdir: Path | None = None
    try:
        with contextlib.ExitStack() as stack:
            target = args.target
            if target is None:
                workdir = Path(tempfile.mkdtemp(prefix="paradigm-compare-"))
                env = {"PARADIGM_MAX_CONCURRENT_JOBS": str(plan.parallel_jobs)}
                print(f"starting paradigm-server (data in {workdir / 'data'})", flush=True)
                server = stack.enter_context(
                    paradigm_server(workdir, "compare", workdir / "data", env=env, metrics=False)
                )
                target = server.target
            client = stack.enter_context(ParadigmClient(target, timeout=600))
            runner = measure(client, target, plan, m, progress=not args.no_progress)
            if args.target is not None and args.cleanup:
                runner.cleanup()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (ParadigmClientError, RuntimeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        if workdir is not None:
            log = workdir / "compare.log"
            if log.exists():
                tail = log.read_text(errors="replace").splitlines()[-20:]
                print("server log:\n" + "\n".join(tail), file=sys.stderr)
        return 1
    finally:
        if workdir is not None:
            if args.keep:
                print(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    m.meta["wall_seconds"] = time.monotonic() - started
    m.meta["energy_sources"] = sorted(energy_sources(m))
    report = write_outputs(m, args.out)
    print()
    for name, verdict in m.meta["verdicts"].items():
        print(f"  {name:<16} {verdict}")
    print(f"\nwrote {report} in {m.meta['wall_seconds']:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "python -m clients.compare") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(argv)
    try:
        return run(args, shlex.join([*prog.split(), *argv]))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

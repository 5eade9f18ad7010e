"""`python -m clients.soak` (`make soak`): a bounded soak of one Paradigm server.

Starts paradigm-server on a throw-away data directory (or uses --target; give --pid too to
watch its memory), trains a classical model (random forest on digits) and a deep one (an
MLP on digits), then for --duration seconds keeps --clients clients (asyncio tasks over a
few grpc.aio channels) predicting on both, while beside them training jobs (logistic
regression on iris, the previous version deleted each time) and model imports (ExportModel,
then ImportModel under a new name, one prediction, then DeleteModel) run one after another.

Pass: no request failed; the server's resident memory (VmRSS of the server process only,
not its job workers; the median of --rss-window one-second samples) at the end of the load
is less than --max-rss-growth percent above its value after the warm-up (which lasts until
one training and one import have finished); its open file descriptors, counted idle before
and after the load, grew by at most --fd-slack. Prints a table, writes --json, exits 1 on a
failure.

    python -m clients.soak --duration 60 --json docs/benchmarks/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np

from clients.cli import format_table
from clients.client import MiB, ParadigmClient, ParadigmClientError, make_infer_request
from clients.harness import paradigm_server
from clients.machine import machine_info
from service.gen.inference import grpc_predict_v2_pb2 as oip
from service.gen.inference import grpc_predict_v2_pb2_grpc as oip_grpc

CLASSICAL = "soak-classical"
DEEP = "soak-deep"
TRAINED = "soak-train"
IMPORTED = "soak-import"
PREDICT_TIMEOUT_S = 30.0
# Rows per prediction: mostly single rows, as online traffic is, with some small batches.
BATCH_SIZES = (1, 1, 1, 2, 4, 8, 16)
KINDS = (
    "predict classical", "predict deep", "train", "export", "import", "predict imported",
    "delete",
)  # fmt: skip


class Tally:
    """Latencies and failures by kind of request; shared by the event loop and threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter[tuple[str, str]] = Counter()
        self.messages: dict[str, str] = {}

    def record(self, kind: str, seconds: float, code: str = "OK", message: str = "") -> None:
        with self._lock:
            if code == "OK":
                self.latencies[kind].append(seconds)
            else:
                self.errors[(kind, code)] += 1
                self.messages.setdefault(code, f"{kind}: {message}"[:300])

    @contextlib.contextmanager
    def timed(self, kind: str) -> Iterator[None]:
        """Records the block as one request of `kind`: its latency, or the status of the
        client error it raised (re-raised, so the caller can skip what depended on it)."""
        started = time.perf_counter()
        try:
            yield
        except ParadigmClientError as error:
            self.record(kind, 0.0, error.code.name, error.details)
            raise
        self.record(kind, time.perf_counter() - started)

    def requests(self, kind: str) -> int:
        return len(self.latencies.get(kind, [])) + sum(
            n for (k, _), n in self.errors.items() if k == kind
        )


# -- the server's process -------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextlib.contextmanager
def local_server(workdir: Path) -> Iterator[tuple[str, int]]:
    """paradigm-server on a free port with its data under workdir; yields (target, pid)."""
    with paradigm_server(workdir, "soak-server", workdir / "data", metrics=False) as server:
        yield server.target, server.pid


# -- the load -------------------------------------------------------------------------------


def rows(n: int, seed: int) -> np.ndarray:
    """Digits-like rows: 64 features in the range of the 8x8 images' gray levels."""
    return np.random.default_rng(seed).uniform(0, 16, (n, 64)).astype(np.float32)


def request_pool() -> list[tuple[str, oip.ModelInferRequest]]:
    """Requests built once, so the clients spend their CPU on calls, not on encoding."""
    return [
        (kind, make_infer_request(model, rows(n, seed=i)))
        for i, n in enumerate(BATCH_SIZES)
        for kind, model in (("predict classical", CLASSICAL), ("predict deep", DEEP))
    ]


async def predict_client(
    stub: oip_grpc.GRPCInferenceServiceStub,
    pool: Sequence[tuple[str, oip.ModelInferRequest]],
    seed: int,
    tally: Tally,
    stop: asyncio.Event,
) -> None:
    rng = np.random.default_rng(seed)
    while not stop.is_set():
        kind, request = pool[int(rng.integers(len(pool)))]
        started = time.perf_counter()
        try:
            await stub.ModelInfer(request, timeout=PREDICT_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            tally.record(kind, 0.0, error.code().name, error.details() or "")
        else:
            tally.record(kind, time.perf_counter() - started)


def train_loop(
    client: ParadigmClient, tally: Tally, stop: threading.Event, cycled: threading.Event,
    every: float,
) -> None:  # fmt: skip
    """Trains new versions of one model; deletes the previous version each time, so the
    registry stays the same size however long the soak runs."""
    previous = ""
    while not stop.is_set():
        started = time.monotonic()
        with contextlib.suppress(ParadigmClientError):
            with tally.timed("train"):
                job = client.start_training(
                    "iris", "logistic_regression", model_name=TRAINED, seed=0
                )
                job = client.wait_for_job(job.id)
            if previous:
                with tally.timed("delete"):
                    client.delete_model(TRAINED, previous)
            previous = job.model_version
        cycled.set()
        stop.wait(max(0.0, started + every - time.monotonic()))


def import_loop(
    client: ParadigmClient, tally: Tally, stop: threading.Event, cycled: threading.Event,
    every: float, workdir: Path,
) -> None:  # fmt: skip
    """Exports the classical model, imports it under a new name, predicts once, deletes it."""
    sample = rows(4, seed=99)
    for n in range(1, sys.maxsize):
        if stop.is_set():
            return
        started = time.monotonic()
        name = f"{IMPORTED}-{n}"
        path = workdir / "exported.onnx"
        with contextlib.suppress(ParadigmClientError):
            with tally.timed("export"):
                client.export_model(CLASSICAL, path)
            with tally.timed("import"):
                client.wait_for_job(client.import_model(name, path, paradigm="classical").id)
            with tally.timed("predict imported"):
                client.infer(name, sample)
            with tally.timed("delete"):
                client.delete_model(name)
        cycled.set()
        stop.wait(max(0.0, started + every - time.monotonic()))


async def run_load(
    target: str,
    client: ParadigmClient,
    pid: int | None,
    args: argparse.Namespace,
    workdir: Path,
) -> dict[str, Any]:
    tally = Tally()
    pool = request_pool()
    options = [("grpc.max_receive_message_length", 64 * MiB)]
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(args.channels)]
    stubs = [oip_grpc.GRPCInferenceServiceStub(channel) for channel in channels]
    figures: dict[str, Any] = {"rss_mib": {}, "fds": {}}
    try:
        for stub in stubs:  # connected before the descriptors are counted
            await stub.ModelInfer(pool[0][1], timeout=PREDICT_TIMEOUT_S)
        if pid is not None:
            figures["fds"]["before"] = open_fds(pid)
            figures["rss_mib"]["before_load"] = rss_mib(pid)
        stop, admin_stop = asyncio.Event(), threading.Event()
        cycled = [threading.Event(), threading.Event()]
        started = time.monotonic()
        clients = [
            asyncio.create_task(predict_client(stubs[i % len(stubs)], pool, i, tally, stop))
            for i in range(args.clients)
        ]
        admin = [
            asyncio.create_task(asyncio.to_thread(
                train_loop, client, tally, admin_stop, cycled[0], args.train_every
            )),
            asyncio.create_task(asyncio.to_thread(
                import_loop, client, tally, admin_stop, cycled[1], args.import_every, workdir
            )),
        ]  # fmt: skip
        timeline: list[tuple[float, float]] = []
        warm_at: int | None = None  # index in timeline of the first sample after warm-up
        while (elapsed := time.monotonic() - started) < args.duration:
            await asyncio.sleep(min(1.0, args.duration - elapsed))
            if pid is not None:
                timeline.append((round(time.monotonic() - started, 1), rss_mib(pid)))
            # Warm once every path has run: first-time costs (a job's first publish, the
            # first import's load) are not growth.
            warmed = all(e.is_set() for e in cycled) and time.monotonic() - started >= args.warmup
            if warm_at is None and warmed:
                warm_at = len(timeline)
        stop.set()
        admin_stop.set()
        await asyncio.gather(*clients)
        loaded_s = time.monotonic() - started
        # Jobs started before the end finish: they are part of the run, and the descriptor
        # count below must see the server idle.
        await asyncio.wait_for(asyncio.gather(*admin), args.drain_timeout)
        figures["duration_s"] = round(time.monotonic() - started, 1)
        figures["load_s"] = round(loaded_s, 1)
        figures["warm_after_s"] = None if warm_at is None else timeline[warm_at - 1][0]
        if pid is not None:
            await asyncio.sleep(1.0)  # a finished job's pipe closes on the server's loop
            figures["fds"]["after"] = open_fds(pid)
            rss = figures["rss_mib"]
            rss["idle_end"] = rss_mib(pid)
            # Medians of a few one-second samples under the same load: a model being
            # loaded at one sample (a transient ~20 MiB) is not growth.
            window = args.rss_window
            values = [r for _, r in timeline]
            if warm_at is not None and len(values) >= warm_at + window:
                rss["after_warmup"] = statistics.median(values[warm_at : warm_at + window])
                rss["end"] = statistics.median(values[-window:])
            rss["peak"] = max([*values, rss["idle_end"]])
            figures["rss_timeline"] = timeline
    finally:
        for channel in channels:
            await channel.close()
    return {**figures, **summarize(tally, figures, args)}


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values), q)) * 1000


def summarize(tally: Tally, figures: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    by_kind: dict[str, dict[str, int]] = defaultdict(dict)
    for (kind, code), n in tally.errors.items():
        errors[code] += n
        by_kind[kind][code] = n
    report: dict[str, Any] = {
        "requests": {kind: tally.requests(kind) for kind in KINDS},
        "errors": dict(errors),
        "errors_by_kind": dict(by_kind),
        "error_examples": tally.messages,
        "latency_ms": {
            kind: {
                "p50": _percentile(tally.latencies.get(kind, []), 50),
                "p99": _percentile(tally.latencies.get(kind, []), 99),
            }
            for kind in KINDS
        },
    }
    checks = {"errors": not errors}
    rss, fds = figures["rss_mib"], figures["fds"]
    if "after_warmup" in rss:
        rss["growth_pct"] = round(100 * (rss["end"] - rss["after_warmup"]) / rss["after_warmup"], 2)
        checks["rss"] = rss["growth_pct"] < args.max_rss_growth
    elif "idle_end" in rss:
        checks["rss"] = False  # watched, but the run ended before the warm-up did
    if "before" in fds and "after" in fds:
        fds["slack"] = args.fd_slack
        checks["fds"] = fds["after"] - fds["before"] <= args.fd_slack
    report["checks"] = checks
    report["passed"] = all(checks.values())
    return report


def print_summary(report: dict[str, Any]) -> None:
    table = []
    for kind in KINDS:
        latency = report["latency_ms"][kind]
        table.append(
            [
                kind,
                report["requests"][kind],
                sum(report["errors_by_kind"].get(kind, {}).values()),
                "-" if latency["p50"] is None else f"{latency['p50']:.2f}",
                "-" if latency["p99"] is None else f"{latency['p99']:.2f}",
            ]
        )
    total = sum(report["requests"].values())
    print(
        f"soak: {report['load_s']} s of load ({report['duration_s']} s in all), "
        f"{report['clients']} clients on {report['channels']} channels, "
        f"{total} requests"
    )
    print(format_table(("kind", "requests", "errors", "p50 ms", "p99 ms"), table))
    errors = report["errors"]
    print("errors: " + (", ".join(f"{c} {n}" for c, n in errors.items()) if errors else "none"))
    for code, message in report["error_examples"].items():
        print(f"  e.g. {code}: {message}")
    checks = report["checks"]
    rss, fds = report["rss_mib"], report["fds"]
    if "growth_pct" in rss:
        print(
            f"server RSS: {rss['after_warmup']:.1f} MiB after warm-up "
            f"({report['warm_after_s']:g} s), {rss['end']:.1f} MiB at the end of the load "
            f"({rss['growth_pct']:+.1f} %, limit {report['max_rss_growth_pct']:g} %): "
            f"{'PASS' if checks['rss'] else 'FAIL'}; peak {rss['peak']:.1f} MiB, "
            f"idle after it {rss['idle_end']:.1f} MiB"
        )
    elif "rss" in checks:
        print("server RSS: FAIL, the run ended before the warm-up did (make it longer)")
    if "slack" in fds:
        print(
            f"server fds: {fds['before']} before, {fds['after']} after (slack {fds['slack']}): "
            f"{'PASS' if checks['fds'] else 'FAIL'}"
        )
    print("PASS" if report["passed"] else "FAIL")


def setup(client: ParadigmClient) -> None:
    """The two served models, trained before the clock starts."""
    client.wait_until_ready(60)
    for algorithm, name, params in (
        ("random_forest", CLASSICAL, {"n_estimators": 50}),
        ("mlp", DEEP, {"epochs": 3}),
    ):
        job = client.start_training("digits", algorithm, model_name=name, hyperparameters=params)
        client.wait_for_job(job.id)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clients.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--warmup", type=float, help="least seconds before the first RSS "
                        "figure, which also waits for one training and one import to finish "
                        "(default: a sixth of --duration, at most 10)")  # fmt: skip
    parser.add_argument("--clients", type=int, default=64, help="concurrent predicting clients")
    parser.add_argument("--channels", type=int, default=4, help="gRPC channels they share")
    parser.add_argument("--train-every", type=float, default=10.0, help="seconds between jobs")
    parser.add_argument("--import-every", type=float, default=10.0, help="seconds between imports")
    parser.add_argument("--max-rss-growth", type=float, default=10.0, help="percent")
    parser.add_argument("--rss-window", type=int, default=3,
                        help="one-second RSS samples whose median is each figure")  # fmt: skip
    parser.add_argument("--fd-slack", type=int, default=2, help="descriptors")
    parser.add_argument("--drain-timeout", type=float, default=180.0,
                        help="most seconds to wait for the last job after the load")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--target", help="use this running server instead of starting one")
    parser.add_argument("--pid", type=int, help="the --target server's process id")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.warmup is None:
        args.warmup = min(10.0, args.duration / 6)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    workdir = Path(tempfile.mkdtemp(prefix="paradigm-soak-"))
    try:
        with contextlib.ExitStack() as stack:
            if args.target:
                target, pid = args.target, args.pid
            else:
                print(f"starting paradigm-server (data in {workdir / 'data'})", flush=True)
                target, pid = stack.enter_context(local_server(workdir))
            client = stack.enter_context(ParadigmClient(target, timeout=120))
            print("training the served models", flush=True)
            setup(client)
            print(
                f"soaking for {args.duration:g} s: {args.clients} clients, a training job "
                f"every {args.train_every:g} s, an import every {args.import_every:g} s",
                flush=True,
            )
            machine = machine_info()
            report = asyncio.run(run_load(target, client, pid, args, workdir))
        report = {
            "started_at": started_at,
            "command": "python -m clients.soak " + " ".join(argv or sys.argv[1:]),
            "clients": args.clients,
            "channels": args.channels,
            "warmup_s": args.warmup,
            "max_rss_growth_pct": args.max_rss_growth,
            "server_pid_watched": pid is not None,
            **report,
            "machine": machine,
        }
        print_summary(report)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")
            print(f"wrote {args.json}")
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (ParadigmClientError, RuntimeError, OSError, TimeoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

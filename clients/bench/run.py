"""`python -m clients.bench.run` (`make bench`, `paradigm bench`): our server against its limits.

Trains logistic regression on digits (classical) and the guide's CNN on the 28x28 scale
dataset (deep; digits if the dataset cannot be generated) on a setup instance of our server,
exports both, then starts on free ports, with copies of its data directory: ours with dynamic
batching on, ours with it off, and the bare grpc.aio server (bare_server.py) per model. The
batching-on server also serves REST, measured as two more line-up entries (OIP v2 over HTTP
with binary tensor data, and with JSON; rest_load.py) beside its own gRPC. At
each concurrency every server (and any --peer) gets the same closed-loop load (load.py,
batch-1 requests), back to back, so noise from other work hits them alike. With every
server stopped it then times ONNX Runtime in-process (inprocess.py) at batch 1 and at the
batch our server actually formed (from its Prometheus histogram), and the cold start of our
server with 20 models registered.

Writes bench-<timestamp>.json (every point and the machine), bench.md (the tables) and one
PNG per paradigm into --out, and prints the target ratios with PASS/MISS.

    python -m clients.bench.run                       # the full run, ~8 s per point
    python -m clients.bench.run --quick --out /tmp/b  # seconds per point, for CI
    python -m clients.bench.run --peer mlserver=127.0.0.1:8081:digits-lr
    python -m clients.bench.run --rest-peer mlserver-rest=127.0.0.1:8080:digits-lr
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from clients.bench import inprocess
from clients.bench.load import (
    InputSpec,
    LoadResult,
    ProcessCpu,
    make_http_request,
    make_request,
    run_load,
)
from clients.cli import format_markdown
from clients.client import ParadigmClient, ParadigmClientError
from clients.harness import (
    free_port,
    paradigm_server,
    paradigm_server_command,
    server_process,
    stop_process,
    wait_serving,
)
from clients.machine import machine_info

PARADIGMS = ("classical", "deep")
CLASSICAL_MODEL = "bench-digits-lr"
DEEP_MODEL = "bench-scale-cnn"
SCALE_DATASET = "bench-scale"
DEFAULT_OUT = Path("docs/benchmarks")

OURS = "paradigm"
OURS_NO_BATCHING = "paradigm-nobatch"
OURS_REST_BINARY = "paradigm-rest-binary"
OURS_REST_JSON = "paradigm-rest-json"
BARE = "bare"
SERVER_LABELS = {
    OURS: "Paradigm (batching on)",
    OURS_NO_BATCHING: "Paradigm (batching off)",
    OURS_REST_BINARY: "Paradigm REST binary (batching on)",
    OURS_REST_JSON: "Paradigm REST JSON (batching on)",
    BARE: "bare grpc.aio + ORT",
}
#: The REST entries: our batching-on server's second port, and how requests travel there.
REST_PROTOCOLS = {OURS_REST_BINARY: "rest-binary", OURS_REST_JSON: "rest-json"}

# The targets from the issue, as (key, threshold, comparison): ratios are "at least",
# milliseconds and seconds "at most".
TARGET_OURS_VS_BARE = 0.9
TARGET_BATCHING_GAIN = 3.0
TARGET_VS_INPROCESS = 0.5
TARGET_P50_OVERHEAD_MS = 0.3
TARGET_COLD_START_S = 3.0
TARGET_REST_VS_GRPC = 0.7
TARGET_REST_VS_PEER_REST = 2.0
#: The concurrency the REST target is judged at (the top one measured where it is absent).
REST_TARGET_CONCURRENCY = 16

OURS_ENV = {"PARADIGM_BATCHING": "true"}
# Cores of other work during a point above which the report warns of a noisy machine.
NOISE_CPU = 0.2


# -- servers --------------------------------------------------------------------------------


@dataclass
class Server:
    """A server under test: where to dial it, and what we can observe of it."""

    key: str
    label: str
    target: str
    pid: int | None = None
    metrics_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: "grpc", or "rest-binary" / "rest-json" (target is then the REST port).
    protocol: str = "grpc"


@contextlib.contextmanager
def our_server(
    workdir: Path,
    key: str,
    data_dir: Path,
    env: Mapping[str, str],
    *,
    metrics: bool = True,
    http_port: int | None = None,
) -> Iterator[Server]:
    """Our server as a point of the benchmark: `paradigm_server` labelled by its key; with
    http_port, it serves REST there too."""
    args = [] if http_port is None else ["--http-port", str(http_port)]
    with paradigm_server(workdir, key, data_dir, env=env, metrics=metrics, args=args) as server:
        yield Server(
            key=key,
            label=SERVER_LABELS.get(key, key),
            target=server.target,
            pid=server.pid,
            metrics_url=server.metrics_url,
            env=dict(env),
        )


@contextlib.contextmanager
def bare_server(workdir: Path, onnx: Path, model: str, paradigm: str) -> Iterator[Server]:
    command = [
        sys.executable, "-m", "clients.bench.bare_server",
        "--model", str(onnx), "--name", model, "--port", "0",
    ]  # fmt: skip
    name = f"bare-{paradigm}"
    with server_process(command, workdir=workdir, name=name) as server:
        yield Server(key=BARE, label=SERVER_LABELS[BARE], target=server.target, pid=server.pid)


# -- models ---------------------------------------------------------------------------------


@dataclass
class BenchModel:
    """A model under test and the batch-1 input that drives it."""

    paradigm: str
    name: str
    algorithm: str
    dataset: str
    onnx: Path
    input: InputSpec
    onnx_bytes: int = 0
    accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["onnx"] = self.onnx.name
        data["input"] = str(self.input)
        return data


def prepare_models(
    client: ParadigmClient, args: argparse.Namespace, workdir: Path, notes: list[str]
) -> dict[str, BenchModel]:
    """Trains (or re-trains) each paradigm's model on the server and exports its ONNX file."""
    models: dict[str, BenchModel] = {}
    for paradigm in args.paradigms:
        started = time.monotonic()
        if paradigm == "classical":
            name, algorithm, dataset, params = CLASSICAL_MODEL, "logistic_regression", "digits", {}
        else:
            name, algorithm, params = DEEP_MODEL, "cnn", {"epochs": args.cnn_epochs}
            dataset = scale_dataset(client, args.scale_rows, notes)
        print(f"training {algorithm} on {dataset} ...", flush=True)
        job = client.wait_for_job(
            client.start_training(
                dataset, algorithm, hyperparameters=params, model_name=name, seed=0
            ).id
        )
        onnx = workdir / f"{name}.onnx"
        exported = client.export_model(job.model_name, onnx, version=job.model_version)
        metadata_ = client.model_metadata(job.model_name, job.model_version)
        spec = metadata_.inputs[0]
        shape = (1, *(abs(int(d)) for d in spec.shape[1:]))
        models[paradigm] = BenchModel(
            paradigm=paradigm,
            name=name,
            algorithm=algorithm,
            dataset=dataset,
            onnx=onnx,
            input=InputSpec(spec.name, spec.datatype, shape),
            onnx_bytes=exported.onnx_bytes,
            accuracy=job.metrics.get("accuracy"),
        )
        print(
            f"  {name}: {models[paradigm].input}, {exported.onnx_bytes} bytes, "
            f"accuracy {job.metrics.get('accuracy', float('nan')):.3f} "
            f"({time.monotonic() - started:.1f} s)",
            flush=True,
        )
    return models


def scale_dataset(client: ParadigmClient, rows: int, notes: list[str]) -> str:
    """The 28x28 scale dataset, generated on the server; digits when that fails."""
    try:
        client.generate_dataset(SCALE_DATASET, rows, image_size=28, seed=0)
    except ParadigmClientError as error:
        if error.code == grpc.StatusCode.ALREADY_EXISTS:
            return SCALE_DATASET
        notes.append(f"scale dataset not generated ({error}); the CNN was trained on digits")
        print(f"  {notes[-1]}", file=sys.stderr)
        return "digits"
    return SCALE_DATASET


def wait_models_ready(target: str, names: Sequence[str], timeout: float = 60.0) -> None:
    with ParadigmClient(target, timeout=10) as client:
        client.wait_until_ready(timeout)
        deadline = time.monotonic() + timeout
        for name in names:
            while not client.model_ready(name):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"model {name} not ready on {target} after {timeout:g} s")
                time.sleep(0.05)


# -- server-side metrics --------------------------------------------------------------------


def _scrape(url: str, model: str) -> dict[str, float]:
    """Sums of our histograms' _sum and _count for one model, from the metrics endpoint."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    wanted = {
        "paradigm_inference_batch_size", "paradigm_inference_duration_seconds",
        "paradigm_inference_queue_wait_seconds", "paradigm_inference_compute_seconds",
    }  # fmt: skip
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in wanted:
            continue
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name.endswith(("_sum", "_count")):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


class ServerMetrics:
    """Window probe: mean batch per model run and server-side times, from Prometheus."""

    def __init__(self, url: str, model: str) -> None:
        self.url = url
        self.model = model
        self._before: dict[str, float] = {}

    def begin(self) -> None:
        self._before = _scrape(self.url, self.model)

    def end(self, elapsed_s: float) -> dict[str, float]:
        after = _scrape(self.url, self.model)

        def mean(base: str, scale: float = 1.0) -> float | None:
            count = after.get(f"{base}_count", 0.0) - self._before.get(f"{base}_count", 0.0)
            total = after.get(f"{base}_sum", 0.0) - self._before.get(f"{base}_sum", 0.0)
            return scale * total / count if count > 0 else None

        figures = {
            "effective_batch": mean("paradigm_inference_batch_size"),
            "server_latency_mean_ms": mean("paradigm_inference_duration_seconds", 1e3),
            "server_queue_wait_mean_ms": mean("paradigm_inference_queue_wait_seconds", 1e3),
            "server_compute_mean_ms": mean("paradigm_inference_compute_seconds", 1e3),
        }
        return {key: value for key, value in figures.items() if value is not None}


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Point:
    """One (paradigm, server, concurrency) measurement."""

    paradigm: str
    server: str
    label: str
    concurrency: int
    result: LoadResult

    def to_dict(self) -> dict[str, Any]:
        return {
            "paradigm": self.paradigm,
            "server": self.server,
            "label": self.label,
            **self.result.to_dict(),
        }


def measure_point(
    server: Server,
    model: BenchModel,
    concurrency: int,
    args: argparse.Namespace,
    model_name: str | None = None,
) -> Point:
    name = model_name or model.name
    probes: list[Any] = []
    if server.pid is not None:
        probes.append(ProcessCpu("server", server.pid))
    if server.metrics_url is not None:
        probes.append(ServerMetrics(server.metrics_url, name))
    if server.protocol == "grpc":
        request = make_request(name, [model.input])
    else:
        binary = server.protocol == "rest-binary"
        request = make_http_request(server.target, name, [model.input], binary=binary)
    result = run_load(
        server.target,
        name,
        request,
        protocol=server.protocol,
        rows_per_request=model.input.rows,
        concurrency=concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        processes=args.processes,
        probes=probes,
    )
    point = Point(model.paradigm, server.key, server.label, concurrency, result)
    print(f"  {format_point(point)}", flush=True)
    return point


@dataclass(frozen=True)
class Entry:
    """One server in the line-up of a paradigm, and the name it serves the model under."""

    server: Server
    model_name: str


def sweep(
    lineup: Mapping[str, Sequence[Entry]],
    models: Mapping[str, BenchModel],
    concurrency: Mapping[str, Sequence[int]],
    args: argparse.Namespace,
) -> tuple[list[Point], list[Point]]:
    """Every (paradigm, concurrency, server) point, servers back to back at each level.

    Interleaving puts the servers compared with each other minutes apart at most, so
    other work on a shared machine disturbs them alike; with --rounds the server order
    rotates each round and each point keeps its median round. Returns (the points kept,
    every point measured).
    """
    measured: dict[tuple[str, str, int], list[Point]] = {}
    for round_index in range(args.rounds):
        if args.rounds > 1:
            print(f"round {round_index + 1} of {args.rounds}", flush=True)
        for paradigm, model in models.items():
            entries = list(lineup[paradigm])
            shift = round_index % len(entries)
            for level in concurrency[paradigm]:
                for entry in entries[shift:] + entries[:shift]:
                    point = measure_point(entry.server, model, level, args, entry.model_name)
                    measured.setdefault((paradigm, entry.server.key, level), []).append(point)
    order = {entry.server.key: i for entries in lineup.values() for i, entry in enumerate(entries)}

    def key(p: Point) -> tuple[int, int, int]:
        return PARADIGMS.index(p.paradigm), order[p.server], p.concurrency

    kept = sorted((_median_round(rounds) for rounds in measured.values()), key=key)
    return kept, sorted((p for rounds in measured.values() for p in rounds), key=key)


def _median_round(rounds: Sequence[Point]) -> Point:
    ranked = sorted(rounds, key=lambda p: p.result.throughput_rps)
    return ranked[(len(ranked) - 1) // 2]


def format_point(point: Point) -> str:
    r = point.result
    extra = ""
    if "effective_batch" in r.observed:
        extra = f", batch {r.observed['effective_batch']:.1f}"
    errors = f", errors {r.errors}" if r.errors else ""
    return (
        f"{point.paradigm:<9} {point.server:<16} c={point.concurrency:<3} "
        f"{r.throughput_rps:8.0f} req/s  p50 {r.latency_ms['p50']:.3f} ms  "
        f"p99 {r.latency_ms['p99']:.3f} ms  client CPU {r.client_cpu_s_per_s:.2f}{extra}{errors}"
    )


def measure_inprocess(
    model: BenchModel, batches: Sequence[int], seconds: float
) -> list[inprocess.InProcessResult]:
    session = inprocess.load_session(model.onnx)
    results = []
    for batch in sorted(set(batches)):
        result = inprocess.measure(model.onnx, batch, seconds=seconds, session=session)
        print(
            f"  in-process {model.paradigm} batch {batch}: {result.median_us:.1f} µs/run, "
            f"{result.rows_per_s:.0f} rows/s",
            flush=True,
        )
        results.append(result)
    return results


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cold_start(
    workdir: Path, model: BenchModel, count: int, repeats: int, env: Mapping[str, str]
) -> dict[str, Any]:
    """Registers `count` copies of a model via ImportModel, then times fresh starts."""
    data_dir = workdir / "cold-data"
    names = [f"cold-{i:02d}" for i in range(count)]
    print(f"cold start: importing {count} copies of {model.onnx.name} ...", flush=True)
    # Two import workers at once: imports are independent and this box has two cores.
    setup_env = {**env, "PARADIGM_MAX_CONCURRENT_JOBS": "2"}
    with (
        our_server(workdir, "cold-setup", data_dir, setup_env, metrics=False) as server,
        ParadigmClient(server.target, timeout=600) as client,
    ):
        jobs = [client.import_model(name, model.onnx, paradigm=model.paradigm) for name in names]
        for job in jobs:
            client.wait_for_job(job.id)
    runs = []
    for _ in range(repeats):
        # Started here, not by the harness: the clock starts at Popen, and a port fixed in
        # advance lets the health poll begin before the server has bound it.
        port = free_port()
        command = [
            *paradigm_server_command(), "--host", "127.0.0.1", "--port", str(port),
            "--metrics-port", "-1", "--data-dir", str(data_dir),
        ]  # fmt: skip
        log = workdir / "cold-start.log"
        with log.open("ab") as log_file:
            started = time.monotonic()
            proc = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                start_new_session=True,
            )
        try:
            target = f"127.0.0.1:{port}"
            serving = wait_serving(target, proc, started + 60) - started
            wait_models_ready(target, names)
            all_ready = time.monotonic() - started
            rss = _rss_mib(proc.pid)
        finally:
            stop_process(proc, "cold-start server")
        runs.append({"serving_s": serving, "all_models_ready_s": all_ready, "rss_mib": rss})
        print(
            f"  SERVING after {serving:.3f} s, all {count} models ready after {all_ready:.3f} s",
            flush=True,
        )
    return {
        "models": count,
        "model_file": model.onnx.name,
        "paradigm": model.paradigm,
        "runs": runs,
        "serving_s": statistics.median(float(r["serving_s"] or 0) for r in runs),
        "all_models_ready_s": statistics.median(float(r["all_models_ready_s"] or 0) for r in runs),
    }


# -- reporting ------------------------------------------------------------------------------


def _find(points: Sequence[Point], paradigm: str, server: str, concurrency: int) -> Point | None:
    return next(
        (
            p
            for p in points
            if p.paradigm == paradigm and p.server == server and p.concurrency == concurrency
        ),
        None,
    )


def _inprocess_at(results: Sequence[dict[str, Any]], batch: int) -> dict[str, Any] | None:
    return next((r for r in results if r["batch"] == batch), None)


def effective_batch(point: Point | None) -> int:
    if point is None:
        return 1
    return max(1, round(point.result.observed.get("effective_batch", 1.0)))


@dataclass
class Target:
    name: str
    value: float | None
    threshold: float
    at_least: bool
    unit: str
    detail: str

    @property
    def status(self) -> str:
        if self.value is None or math.isnan(self.value):
            return "n/a"
        ok = self.value >= self.threshold if self.at_least else self.value <= self.threshold
        return "PASS" if ok else "MISS"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}

    def line(self) -> str:
        shown = "-" if self.value is None else f"{self.value:.3g}{self.unit}"
        sign = ">=" if self.at_least else "<="
        return (
            f"{self.status:<4}  {self.name}: {shown} (target {sign} {self.threshold:g}"
            f"{self.unit}); {self.detail}"
        )


def evaluate_targets(
    points: Sequence[Point],
    concurrency: Mapping[str, Sequence[int]],
    in_process: Mapping[str, Sequence[dict[str, Any]]],
    cold: dict[str, Any] | None,
    rest_peers: frozenset[str] = frozenset(),
) -> list[Target]:
    targets = []

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    if "classical" in concurrency:
        top = max(concurrency["classical"])
        ours, bare = _find(points, "classical", OURS, top), _find(points, "classical", BARE, top)
        targets.append(
            Target(
                f"classical ours / bare at c={top}",
                ratio(_rps_of(ours), _rps_of(bare)),
                TARGET_OURS_VS_BARE, True, "x",
                f"{_rps(ours)} vs {_rps(bare)} req/s; server CPU per request "
                f"{_cpu_per_request(ours)} vs {_cpu_per_request(bare)} µs",
            )
        )  # fmt: skip
    if "deep" in concurrency:
        top = max(concurrency["deep"])
        on, off = _find(points, "deep", OURS, top), _find(points, "deep", OURS_NO_BATCHING, top)
        targets.append(
            Target(
                f"deep batching on / off at c={top}",
                ratio(_rps_of(on), _rps_of(off)),
                TARGET_BATCHING_GAIN, True, "x",
                f"{_rps(on)} vs {_rps(off)} req/s; server CPU per request "
                f"{_cpu_per_request(on)} vs {_cpu_per_request(off)} µs",
            )
        )  # fmt: skip
        batch = effective_batch(on)
        limit = _inprocess_at(in_process.get("deep", []), batch)
        targets.append(
            Target(
                f"deep batching on / in-process ORT at batch {batch}, c={top}",
                ratio(
                    None if on is None else on.result.rows_per_s,
                    None if limit is None else float(limit["rows_per_s"]),
                ),
                TARGET_VS_INPROCESS, True, "x",
                f"{_rps(on)} rows/s vs {limit['rows_per_s']:.0f} rows/s in-process (1 thread)"
                if limit else "no in-process figure",
            )
        )  # fmt: skip
    for paradigm in concurrency:
        if 1 not in concurrency[paradigm]:
            continue
        ours = _find(points, paradigm, OURS, 1)
        limit = _inprocess_at(in_process.get(paradigm, []), 1)
        overhead = (
            ours.result.latency_ms["p50"] - limit["median_us"] / 1000
            if ours is not None and limit is not None
            else None
        )
        targets.append(
            Target(
                f"{paradigm} c=1 p50 minus in-process ORT",
                overhead,
                TARGET_P50_OVERHEAD_MS, False, " ms",
                f"p50 {ours.result.latency_ms['p50']:.3f} ms, ORT {limit['median_us']:.1f} µs"
                if ours is not None and limit is not None else "not measured",
            )
        )  # fmt: skip
    for paradigm, levels in concurrency.items():
        level = REST_TARGET_CONCURRENCY if REST_TARGET_CONCURRENCY in levels else max(levels)
        rest = _find(points, paradigm, OURS_REST_BINARY, level)
        grpc_point = _find(points, paradigm, OURS, level)
        if rest is None:
            continue
        json_point = _find(points, paradigm, OURS_REST_JSON, level)
        for peer in sorted({p.server for p in points if p.server in rest_peers}):
            theirs = _find(points, paradigm, peer, level)
            targets.append(
                Target(
                    f"{paradigm} REST binary / {peer} (REST JSON) at c={level}",
                    ratio(_rps_of(rest), _rps_of(theirs)),
                    TARGET_REST_VS_PEER_REST, True, "x",
                    f"{_rps(rest)} vs {_rps(theirs)} req/s (our REST JSON {_rps(json_point)})",
                )
            )  # fmt: skip
        targets.append(
            Target(
                f"{paradigm} REST binary / gRPC (same server) at c={level}",
                ratio(_rps_of(rest), _rps_of(grpc_point)),
                TARGET_REST_VS_GRPC, True, "x",
                f"{_rps(rest)} vs {_rps(grpc_point)} req/s (REST JSON {_rps(json_point)}); "
                f"server CPU per request {_cpu_per_request(rest)} vs "
                f"{_cpu_per_request(grpc_point)} µs",
            )
        )  # fmt: skip
    if cold is not None:
        targets.append(
            Target(
                f"cold start to SERVING with {cold['models']} models",
                cold["serving_s"],
                TARGET_COLD_START_S, False, " s",
                f"all models ready after {cold['all_models_ready_s']:.2f} s (median of "
                f"{len(cold['runs'])})",
            )
        )  # fmt: skip
    return targets


def _rps_of(point: Point | None) -> float | None:
    return None if point is None else point.result.throughput_rps


def _cpu_per_request(point: Point | None) -> str:
    if point is None or not point.result.throughput_rps:
        return "-"
    cpu = point.result.observed.get("server_cpu_s_per_s")
    return "-" if cpu is None else f"{1e6 * cpu / point.result.throughput_rps:.0f}"


def _rps(point: Point | None) -> str:
    return "-" if point is None else f"{point.result.throughput_rps:.0f}"


TABLE_HEADERS = (
    "paradigm", "server", "c", "req/s", "rows/s", "p50 ms", "p95 ms", "p99 ms", "max ms",
    "errors", "client CPU", "server CPU", "other CPU", "server µs/req", "batch",
)  # fmt: skip


def other_cpu(point: Point) -> float | None:
    """Busy CPU of the whole machine that was neither the load nor the server: noise."""
    observed = point.result.observed
    server = observed.get("server_cpu_s_per_s")
    if server is None or "system_cpu_s_per_s" not in observed:
        return None
    return max(0.0, observed["system_cpu_s_per_s"] - point.result.client_cpu_s_per_s - server)


def table_rows(points: Sequence[Point]) -> list[list[str]]:
    rows = []
    for p in points:
        r, observed = p.result, p.result.observed
        server_cpu = observed.get("server_cpu_s_per_s")
        other = other_cpu(p)
        rows.append(
            [
                p.paradigm, p.label, str(p.concurrency), f"{r.throughput_rps:.0f}",
                f"{r.rows_per_s:.0f}", f"{r.latency_ms['p50']:.3f}", f"{r.latency_ms['p95']:.3f}",
                f"{r.latency_ms['p99']:.3f}", f"{r.latency_ms['max']:.1f}",
                str(r.error_count), f"{r.client_cpu_s_per_s:.2f}",
                "-" if server_cpu is None else f"{server_cpu:.2f}",
                "-" if other is None else f"{other:.2f}",
                _cpu_per_request(p),
                f"{observed['effective_batch']:.1f}" if "effective_batch" in observed else "-",
            ]
        )  # fmt: skip
    return rows


def write_markdown(report: dict[str, Any], points: Sequence[Point], targets: Sequence[Target],
                   path: Path, json_name: str, plots: Sequence[str]) -> str:  # fmt: skip
    machine = report["machine"]
    lines = [
        "# Serving benchmark: Paradigm against its limits",
        "",
        f"Run {report['created']} on {machine['cpu']} ({machine['cores']} cores), "
        f"Python {machine['python']}, "
        + ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
        + f"; commit {machine['git_commit'] or '?'}. Load average at start "
        f"{machine['loadavg_start'][0]:.2f}, at end {machine['loadavg_end'][0]:.2f}.",
        "",
        f"Command: `{report['command']}`. Raw data: `{json_name}`.",
        "",
        "Closed loop, batch-1 requests in `raw_input_contents`, "
        f"{report['settings']['duration']:g} s measured after {report['settings']['warmup']:g} s "
        f"of warm-up per point, load from {report['settings']['processes']} grpc.aio process(es) "
        "on the same machine (REST rows: the same server's HTTP port, one keep-alive "
        "connection per stream, prebuilt requests, `clients/bench/rest_load.py`). "
        "All servers stay up (idle ones cost next to nothing) and at each "
        "concurrency they are measured back to back, so other work on a shared machine "
        f"disturbs them alike; {report['settings']['rounds']} round(s), each point its median "
        "round by throughput. CPU columns are CPU-seconds per second over the measured window "
        "(1.00 = one core busy): the load generator's own, the server's, and everything else "
        "on the machine (noise from other work). server µs/req: the server's CPU time per "
        "answered request, which other work on the machine disturbs far less than req/s. "
        "batch: mean rows per model run, from the server's `paradigm_inference_batch_size` "
        "histogram.",
        "",
    ]
    models = report["models"]
    for paradigm, model in models.items():
        lines.append(
            f"- {paradigm}: `{model['name']}` = {model['algorithm']} on {model['dataset']}, "
            f"input {model['input']}, ONNX {model['onnx_bytes']} bytes"
        )
    lines += ["", format_markdown(TABLE_HEADERS, table_rows(points))]
    lines += ["In-process ONNX Runtime (one thread, same session options):", ""]
    inproc_rows = [
        [paradigm, str(r["batch"]), f"{r['median_us']:.1f}", f"{r['p99_us']:.1f}",
         f"{r['rows_per_s']:.0f}"]
        for paradigm, results in report["inprocess"].items()
        for r in results
    ]  # fmt: skip
    lines += [format_markdown(("paradigm", "batch", "median µs", "p99 µs", "rows/s"), inproc_rows)]
    cold = report.get("cold_start")
    if cold:
        lines += [
            f"Cold start (process start to health SERVING) with {cold['models']} models "
            f"registered ({cold['paradigm']} `{cold['model_file']}` imported "
            f"{cold['models']} times): median {cold['serving_s']:.3f} s; every model "
            f"ready after {cold['all_models_ready_s']:.3f} s.",
            "",
        ]
    lines += ["## Targets", "", "```", *(t.line() for t in targets), "```", ""]
    if report["notes"]:
        lines += ["## Notes", "", *(f"- {note}" for note in report["notes"]), ""]
    lines += [f"![{name}]({name})" for name in plots]
    text = "\n".join(lines).rstrip() + "\n"
    path.write_text(text)
    return text


def plot(points: Sequence[Point], paradigm: str, path: Path,
         in_process: Sequence[dict[str, Any]]) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    mine = [p for p in points if p.paradigm == paradigm]
    servers = list(dict.fromkeys(p.label for p in mine))
    fig, (ax_rps, ax_lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, label in enumerate(servers):
        series = sorted((p for p in mine if p.label == label), key=lambda p: p.concurrency)
        xs = [p.concurrency for p in series]
        color = f"C{index}"
        ax_rps.plot(xs, [p.result.throughput_rps for p in series], "o-", color=color, label=label)
        ax_lat.plot(xs, [p.result.latency_ms["p50"] for p in series], "o-", color=color,
                    label=f"{label} p50")  # fmt: skip
        ax_lat.plot(xs, [p.result.latency_ms["p99"] for p in series], "s--", color=color,
                    alpha=0.6, label=f"{label} p99")  # fmt: skip
    measured = max((p.result.throughput_rps for p in mine), default=0.0)
    if in_process:
        # One line, at the largest batch timed (the one our server reached), and only when
        # it is within reach of the plot's scale: 150 000 rows/s would flatten the curves.
        limit = max(in_process, key=lambda r: r["batch"])
        if measured and limit["rows_per_s"] <= 4 * measured:
            ax_rps.axhline(limit["rows_per_s"], color="grey", linestyle=":", linewidth=1)
            ax_rps.text(
                0.01, limit["rows_per_s"],
                f"in-process ORT, 1 thread, batch {limit['batch']}: "
                f"{limit['rows_per_s']:.0f} rows/s",
                transform=ax_rps.get_yaxis_transform(), fontsize=7, color="grey", va="bottom",
            )  # fmt: skip
    concurrencies = sorted({p.concurrency for p in mine})
    for ax in (ax_rps, ax_lat):
        ax.set_xscale("log", base=2)
        # Ticks at the concurrencies measured, written as plain numbers (not 2^n).
        ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
        ax.minorticks_off()
        ax.set_xlabel("concurrency (closed-loop streams)")
        ax.grid(True, alpha=0.3)
    ax_rps.set_ylabel("throughput (req/s; = rows/s at batch 1)")
    ax_rps.set_ylim(bottom=0)
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_yscale("log")
    ax_lat.yaxis.set_major_formatter(ScalarFormatter())
    ax_lat.yaxis.set_minor_formatter(NullFormatter())
    ax_rps.legend(fontsize=8)
    ax_lat.legend(fontsize=7)
    fig.suptitle(f"{paradigm}: batch-1 ModelInfer, throughput and latency vs concurrency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main -----------------------------------------------------------------------------------


def parse_peer(text: str) -> tuple[str, str, str, str]:
    """NAME=HOST:PORT:MODEL[:PARADIGM] -> (name, target, model, paradigm)."""
    name, sep, rest = text.partition("=")
    parts = rest.split(":")
    paradigm = "classical"
    if len(parts) == 4 and parts[3] in PARADIGMS:
        paradigm = parts.pop()
    if not sep or not name or len(parts) != 3 or not all(parts):
        raise argparse.ArgumentTypeError(
            f"expected NAME=HOST:PORT:MODEL[:classical|deep], got {text!r}"
        )
    host, port, model = parts
    return name, f"{host}:{port}", model, paradigm


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,4,16, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _paradigm_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or any(v not in PARADIGMS for v in values):
        raise argparse.ArgumentTypeError(f"expected a list of {PARADIGMS}, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paradigm bench",
        description="Benchmark Paradigm's serving path against the bare grpc.aio server, "
        "in-process ONNX Runtime and optional peers; writes JSON, markdown and plots.",
    )
    parser.add_argument("--duration", type=float, help="measured seconds per point (8)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each (2)")
    parser.add_argument(
        "--quick", action="store_true",
        help="CI smoke: ~1 s points, a tiny scale dataset, 1 CNN epoch, 3 cold-start models",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--paradigms", type=_paradigm_list, default=list(PARADIGMS))
    parser.add_argument("--concurrency-classical", type=_int_list, default=None,
                        help="default 1,4,16")  # fmt: skip
    parser.add_argument("--concurrency-deep", type=_int_list, default=None,
                        help="default 1,16,64")  # fmt: skip
    parser.add_argument("--processes", type=int, default=1, help="load generator processes")
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="repeat the sweep; each point keeps its median round (for noisy machines)",
    )  # fmt: skip
    parser.add_argument("--scale-rows", type=int, help="rows of the scale dataset (20000)")
    parser.add_argument("--cnn-epochs", type=int, help="CNN training epochs (2)")
    parser.add_argument("--cold-start-models", type=int, help="models registered (20)")
    parser.add_argument("--cold-start-repeats", type=int, help="fresh starts timed (3)")
    parser.add_argument("--cold-start-paradigm", choices=PARADIGMS, default="classical",
                        help="whose ONNX file is imported for the cold start")  # fmt: skip
    parser.add_argument("--skip-cold-start", action="store_true")
    parser.add_argument(
        "--target-ours", metavar="HOST:PORT",
        help="measure this running Paradigm server instead of starting ours (no batching-off "
        "server then); the models are trained on it",
    )  # fmt: skip
    parser.add_argument("--metrics-ours", metavar="URL",
                        help="its /metrics URL, for the effective batch size")  # fmt: skip
    parser.add_argument(
        "--peer", type=parse_peer, action="append", default=[],
        metavar="NAME=HOST:PORT:MODEL[:PARADIGM]",
        help="another OIP v2 server serving the same model (default paradigm classical); "
        "repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--http-ours", metavar="HOST:PORT",
        help="with --target-ours: its REST port, measured beside its gRPC",
    )  # fmt: skip
    parser.add_argument(
        "--rest-peer", type=parse_peer, action="append", default=[],
        metavar="NAME=HOST:PORT:MODEL[:PARADIGM]",
        help="another OIP v2 server's REST port (JSON requests: the binary extension is "
        "Triton's); repeatable",
    )  # fmt: skip
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs and ONNX files")
    return parser


def resolve_defaults(args: argparse.Namespace) -> None:
    quick = args.quick
    defaults = {
        "duration": 1.0 if quick else 8.0,
        "warmup": 0.5 if quick else 2.0,
        "scale_rows": 600 if quick else 20_000,
        "cnn_epochs": 1 if quick else 2,
        "cold_start_models": 3 if quick else 20,
        "cold_start_repeats": 1 if quick else 3,
        "concurrency_classical": [4] if quick else [1, 4, 16],
        "concurrency_deep": [4] if quick else [1, 16, 64],
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    resolve_defaults(args)
    args.out.mkdir(parents=True, exist_ok=True)
    created = datetime.now(UTC)
    concurrency = {
        p: args.concurrency_classical if p == "classical" else args.concurrency_deep
        for p in args.paradigms
    }
    notes: list[str] = []
    in_process: dict[str, list[dict[str, Any]]] = {}
    cold: dict[str, Any] | None = None
    machine = machine_info()
    workdir = Path(tempfile.mkdtemp(prefix="paradigm-bench-"))
    try:
        models = train_and_export(args, workdir, notes)
        with contextlib.ExitStack() as stack:
            lineup = start_lineup(stack, args, workdir, models, notes)
            points, every_point = sweep(lineup, models, concurrency, args)
        servers = {
            entry.server.key: {
                "label": entry.server.label,
                "env": entry.server.env,
                **({"model": entry.model_name} if entry.server.pid is None else {}),
            }
            for entries in lineup.values()
            for entry in entries
        }

        # The limits and the cold start run with every server above stopped.
        print("in-process ONNX Runtime ...", flush=True)
        for paradigm, model in models.items():
            batches = [1, *(effective_batch(p) for p in points
                            if p.paradigm == paradigm and p.server == OURS)]  # fmt: skip
            seconds = 0.3 if args.quick else 2.0
            in_process[paradigm] = [r.to_dict() for r in measure_inprocess(model, batches, seconds)]

        if not args.skip_cold_start:
            source = models.get(args.cold_start_paradigm) or next(iter(models.values()))
            cold = cold_start(
                workdir, source, args.cold_start_models, args.cold_start_repeats, OURS_ENV
            )
    finally:
        if args.keep_workdir:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    machine["loadavg_end"] = list(os.getloadavg())
    noisiest = max((other_cpu(p) or 0.0 for p in points), default=0.0)
    if noisiest > NOISE_CPU:
        notes.append(
            f"other work on the machine used up to {noisiest:.2f} cores during some points "
            "(the 'other CPU' column): compare servers at the same concurrency, measured back "
            "to back, or use --rounds"
        )
    rest_peers = frozenset(name for name, *_ in args.rest_peer)
    targets = evaluate_targets(points, concurrency, in_process, cold, rest_peers)
    report = {
        "schema": 1,
        "created": created.isoformat(timespec="seconds"),
        "command": " ".join(
            ["python -m clients.bench.run", *(sys.argv[1:] if argv is None else argv)]
        ),
        "machine": machine,
        "settings": {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(args).items()
        },
        "models": {paradigm: model.to_dict() for paradigm, model in models.items()},
        "servers": servers,
        "points": [p.to_dict() for p in points],
        # With --rounds > 1: every round's points, the kept ones included.
        "all_rounds": [p.to_dict() for p in every_point] if args.rounds > 1 else [],
        "inprocess": in_process,
        "cold_start": cold,
        "targets": [t.to_dict() for t in targets],
        "notes": notes,
    }
    json_path = args.out / f"bench-{created.strftime('%Y%m%dT%H%M%SZ')}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    plots = []
    for paradigm in models:
        name = f"bench-{paradigm}.png"
        plot(points, paradigm, args.out / name, in_process.get(paradigm, []))
        plots.append(name)
    text = write_markdown(report, points, targets, args.out / "bench.md", json_path.name, plots)
    print()
    print(text)
    print(f"wrote {json_path}, {args.out / 'bench.md'} and {', '.join(plots)}")
    errors = sum(p.result.error_count for p in points)
    return 1 if errors or any(not p.result.requests for p in points) else 0


def train_and_export(
    args: argparse.Namespace, workdir: Path, notes: list[str]
) -> dict[str, BenchModel]:
    """Trains the models on our server (a setup instance, or the one given) and exports them."""
    with contextlib.ExitStack() as stack:
        if args.target_ours is None:
            target = stack.enter_context(
                our_server(workdir, "setup", workdir / "data", OURS_ENV, metrics=False)
            ).target
        else:
            target = args.target_ours
        with ParadigmClient(target, timeout=900) as client:
            client.wait_until_ready(60)
            return prepare_models(client, args, workdir, notes)


def start_lineup(
    stack: contextlib.ExitStack,
    args: argparse.Namespace,
    workdir: Path,
    models: Mapping[str, BenchModel],
    notes: list[str],
) -> dict[str, list[Entry]]:
    """Starts every server under test at once (idle ones cost next to nothing)."""
    names = [model.name for model in models.values()]
    ours: list[Server] = []
    if args.target_ours is None:
        # Two copies of the setup server's data directory: both serve identical models, and
        # neither writes where the other reads.
        for key, env in ((OURS, OURS_ENV), (OURS_NO_BATCHING, {"PARADIGM_BATCHING": "false"})):
            data_dir = workdir / f"data-{key}"
            shutil.copytree(workdir / "data", data_dir)
            http_port = free_port() if key == OURS else None
            server = stack.enter_context(
                our_server(workdir, key, data_dir, env, http_port=http_port)
            )
            ours.append(server)
            if http_port is not None:
                # The same process on its REST port: gRPC and REST compared on one server.
                ours += [
                    dataclasses.replace(
                        server,
                        key=rest_key,
                        label=SERVER_LABELS[rest_key],
                        target=f"127.0.0.1:{http_port}",
                        protocol=protocol,
                    )
                    for rest_key, protocol in REST_PROTOCOLS.items()
                ]
    else:
        notes.append("--target-ours: the batching-off server was not started")
        given = Server(OURS, "Paradigm (given)", args.target_ours, metrics_url=args.metrics_ours)
        ours.append(given)
        if args.http_ours:
            ours += [
                dataclasses.replace(
                    given, key=key, label=SERVER_LABELS[key], target=args.http_ours,
                    protocol=protocol,
                )
                for key, protocol in REST_PROTOCOLS.items()
            ]  # fmt: skip
    for server in ours:
        if server.protocol == "grpc":
            wait_models_ready(server.target, names)
    lineup: dict[str, list[Entry]] = {}
    for paradigm, model in models.items():
        bare = stack.enter_context(bare_server(workdir, model.onnx, model.name, paradigm))
        wait_models_ready(bare.target, [model.name])
        lineup[paradigm] = [
            *(Entry(server, model.name) for server in ours),
            Entry(bare, model.name),
        ]
    for name, target, peer_model, paradigm in args.peer:
        if paradigm not in models:
            notes.append(f"peer {name}: paradigm {paradigm} not benchmarked, skipped")
            continue
        lineup[paradigm].append(Entry(Server(name, name, target), peer_model))
    for name, target, peer_model, paradigm in args.rest_peer:
        if paradigm not in models:
            notes.append(f"REST peer {name}: paradigm {paradigm} not benchmarked, skipped")
            continue
        peer = Server(name, f"{name} (REST JSON)", target, protocol="rest-json")
        lineup[paradigm].append(Entry(peer, peer_model))
    return lineup


if __name__ == "__main__":
    sys.exit(main())

"""Closed-loop load for any Open Inference Protocol v2 server (ours, the bare one, MLServer),
over gRPC or, with protocol "rest-binary" / "rest-json", over REST (rest_load.py).

N streams each keep one ModelInfer in flight: send, wait for the answer, send again. They
are spread over P worker processes (spawn), each with one grpc.aio channel. The client
must cost little next to the server it measures, since on a small machine both share the
cores, so each stream sends one request serialized once up front and takes the answer as
raw bytes (no protobuf parsing on the hot path). Only the very first answer is parsed, to
prove the target really answers with tensors.

Timing: the parent tells every worker one absolute window on the system-wide monotonic
clock (warm-up end, end); requests that complete inside it count. Each worker reports its
own CPU time over that window, so the result says what the load itself cost.

    python -m clients.bench.load --target 127.0.0.1:8001 --model digits-lr \
        --input input:FP32:1x64 --concurrency 16 --duration 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import resource
import sys
import time
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
import grpc.aio
import numpy as np

from clients import dtypes
from clients.bench.rest_load import (
    PROTOCOLS,
    RestConnection,
    RestError,
    RestRequest,
    make_rest_request,
    output_shapes,
)
from clients.client import make_infer_request
from service.gen.inference import grpc_predict_v2_pb2 as oip

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
# Time the parent leaves between "go" and the start of the warm-up, so every worker has
# received the message before any of them counts as late.
_GO_SLACK_S = 0.05
# After a failed call, a stream waits this long before the next: a server that refuses at
# once (UNAVAILABLE) would otherwise be hammered by a busy loop that eats the client's CPU.
_ERROR_BACKOFF_S = 0.001
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class InputSpec:
    """One input tensor: name, OIP datatype and full shape (batch dimension included)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> InputSpec:
        """`input:FP32:1x64` -> InputSpec("input", "FP32", (1, 64))."""
        try:
            name, datatype, dims = text.split(":")
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise ValueError(f"expected NAME:DATATYPE:DIMxDIM..., got {text!r}") from None
        dtypes.lookup(datatype)  # raises on an unknown datatype
        if not shape or any(d <= 0 for d in shape):
            raise ValueError(f"{text!r}: every dimension must be positive")
        return cls(name, datatype.upper(), shape)

    def __str__(self) -> str:
        return f"{self.name}:{self.datatype}:{'x'.join(map(str, self.shape))}"

    @property
    def rows(self) -> int:
        return self.shape[0]


def make_request(
    model: str, inputs: Sequence[InputSpec], *, version: str = "", seed: int = 0
) -> bytes:
    """A serialized ModelInferRequest with random data in raw_input_contents.

    Values are uniform in [0, 1) (floats) or zero (integers): finite, so servers that
    reject NaN accept them, and the models served here do the same work whatever they are.
    """
    return make_request_from(model, random_inputs(inputs, seed), version=version)


def make_http_request(
    target: str,
    model: str,
    inputs: Sequence[InputSpec],
    *,
    binary: bool,
    version: str = "",
    seed: int = 0,
) -> bytes:
    """The whole HTTP request (REST) with the same data make_request sends over gRPC."""
    arrays = random_inputs(inputs, seed)
    return make_rest_request(target, model, arrays, binary=binary, version=version).wire


def random_inputs(inputs: Sequence[InputSpec], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for spec in inputs:
        dtype = dtypes.dtype_of(spec.datatype)
        if dtype.kind == "f":
            arrays[spec.name] = rng.random(spec.shape).astype(dtype)
        else:
            arrays[spec.name] = np.zeros(spec.shape, dtype=dtype)
    return arrays


def make_request_from(model: str, inputs: Mapping[str, np.ndarray], *, version: str = "") -> bytes:
    """A serialized ModelInferRequest carrying these arrays as raw contents."""
    return make_infer_request(model, dict(inputs), version=version).SerializeToString()


class WindowProbe(Protocol):
    """Something sampled at both ends of the measured window (a process's CPU, metrics)."""

    def begin(self) -> None: ...

    def end(self, elapsed_s: float) -> dict[str, float]:
        """Figures over the window, named so that several probes can share one dict."""
        ...


class ProcessCpu:
    """CPU seconds per second of one process (all its threads), e.g. the server."""

    def __init__(self, name: str, pid: int) -> None:
        self.key = f"{name}_cpu_s_per_s"
        self.pid = pid
        self._before: float | None = None

    def begin(self) -> None:
        self._before = _proc_cpu_seconds(self.pid)

    def end(self, elapsed_s: float) -> dict[str, float]:
        after = _proc_cpu_seconds(self.pid)
        if self._before is None or after is None:
            return {}
        return {self.key: (after - self._before) / elapsed_s}


def _descendants(pid: int) -> list[int]:
    """pid's children, their children, ... (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pending.extend(int(child) for child in task.read_text().split())
        if current != pid:
            found.append(current)
    return found


class ProcessTreeCpu(ProcessCpu):
    """CPU seconds per second of a process and every process under it (e.g. a server of
    several serving processes). Processes that start or end inside the window are missed."""

    def _tree_seconds(self) -> dict[int, float]:
        seconds = {}
        for pid in (self.pid, *_descendants(self.pid)):
            cpu = _proc_cpu_seconds(pid)
            if cpu is not None:
                seconds[pid] = cpu
        return seconds

    def begin(self) -> None:
        self._tree_before = self._tree_seconds()

    def end(self, elapsed_s: float) -> dict[str, float]:
        after = self._tree_seconds()
        used = sum(after[pid] - self._tree_before[pid] for pid in after if pid in self._tree_before)
        return {self.key: used / elapsed_s}


class SystemCpu:
    """Busy CPU seconds per second of the whole machine: with the client's and the server's
    own figures it shows how much other work (noise) ran beside the measurement."""

    key = "system_cpu_s_per_s"

    def __init__(self) -> None:
        self._before = 0.0

    def begin(self) -> None:
        self._before = _system_busy_seconds()

    def end(self, elapsed_s: float) -> dict[str, float]:
        return {self.key: (_system_busy_seconds() - self._before) / elapsed_s}


@dataclass
class LoadResult:
    """What one load point measured; latencies in milliseconds, CPU in seconds per second."""

    target: str
    model: str
    concurrency: int
    processes: int
    rows_per_request: int
    duration_s: float
    requests: int
    errors: dict[str, int]
    throughput_rps: float
    rows_per_s: float
    latency_ms: dict[str, float]
    client_cpu_s_per_s: float
    #: What the probes measured over the same window (system CPU, server CPU, metrics).
    observed: dict[str, float] = field(default_factory=dict)
    #: Outputs of the first answer, name -> shape, as a check that tensors came back.
    response_outputs: dict[str, list[int]] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _WorkerPlan:
    target: str
    request: bytes
    streams: int
    timeout_s: float
    #: TCP connections this process spreads its streams over (each its own subchannel).
    connections: int = 1
    #: "grpc", or "rest-binary" / "rest-json": request is then a whole HTTP request.
    protocol: str = "grpc"


def _proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads) from /proc; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; the fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _system_busy_seconds() -> float:
    """All CPUs' non-idle time since boot, from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is
    # already counted in user, so only the first eight add up; idle and iowait are not busy.
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]
    return busy / _CLK_TCK


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _drive(conn: multiprocessing.connection.Connection, plan: _WorkerPlan) -> None:
    if plan.protocol != "grpc":
        await _drive_rest(conn, plan)
        return
    options = [
        ("grpc.max_receive_message_length", -1),
        ("grpc.max_send_message_length", -1),
        # Each channel its own TCP connection (gRPC shares one per target by default): a
        # server of several processes on one port spreads connections, not requests.
        ("grpc.use_local_subchannel_pool", 1),
    ]
    async with contextlib.AsyncExitStack() as channels:
        opened = [
            await channels.enter_async_context(grpc.aio.insecure_channel(plan.target, options))
            for _ in range(max(1, min(plan.connections, plan.streams)))
        ]
        # No (de)serializers: the request goes out as the prebuilt bytes and answers come
        # back as bytes, so the hot path does no protobuf work at all.
        calls = [channel.unary_unary(MODEL_INFER) for channel in opened]
        call = calls[0]
        try:
            # wait_for_ready rides out a server still binding, for a bounded time.
            first = await call(plan.request, timeout=min(plan.timeout_s, 15.0), wait_for_ready=True)
            response = oip.ModelInferResponse.FromString(first)
            outputs = {out.name: list(out.shape) for out in response.outputs}
        except grpc.aio.AioRpcError as error:
            conn.send(("error", f"{error.code().name}: {error.details()}"))
            return
        conn.send(("ready", outputs))
        _, start, end = conn.recv()

        loop = asyncio.get_running_loop()
        cpu: dict[str, float] = {}
        loop.call_at(start, lambda: cpu.__setitem__("start", _own_cpu_seconds()))
        loop.call_at(end, lambda: cpu.__setitem__("end", _own_cpu_seconds()))
        latencies = array("d")
        errors: Counter[str] = Counter()
        request, timeout = plan.request, plan.timeout_s
        clock = time.monotonic  # the clock asyncio's call_at uses, shared by all processes

        async def stream(call: Any) -> None:
            while (sent := clock()) < end:
                try:
                    await call(request, timeout=timeout)
                    failed = ""
                except grpc.aio.AioRpcError as error:
                    failed = error.code().name
                done = clock()
                if start <= done <= end:
                    if failed:
                        errors[failed] += 1
                    else:
                        latencies.append(done - sent)
                if failed:
                    await asyncio.sleep(_ERROR_BACKOFF_S)

        for other in calls[1:]:  # every connection up and answering before the window
            await other(plan.request, timeout=min(plan.timeout_s, 15.0), wait_for_ready=True)
        await asyncio.gather(*(stream(calls[i % len(calls)]) for i in range(plan.streams)))
        now = _own_cpu_seconds()
        cpu_used = cpu.get("end", now) - cpu.get("start", now)
        conn.send(("done", latencies.tobytes(), dict(errors), cpu_used))


async def _drive_rest(conn: multiprocessing.connection.Connection, plan: _WorkerPlan) -> None:
    """As _drive, over REST: one keep-alive HTTP/1.1 connection per stream."""
    request = RestRequest("", plan.request)
    connections: list[RestConnection] = []
    try:
        for _ in range(plan.streams):
            connections.append(await RestConnection.open(plan.target))
        try:
            headers, body = await asyncio.wait_for(connections[0].send(request), plan.timeout_s)
        except RestError as error:
            conn.send(("error", f"HTTP {error}"))
            return
        conn.send(("ready", output_shapes(headers, body)))
        _, start, end = conn.recv()

        loop = asyncio.get_running_loop()
        cpu: dict[str, float] = {}
        loop.call_at(start, lambda: cpu.__setitem__("start", _own_cpu_seconds()))
        loop.call_at(end, lambda: cpu.__setitem__("end", _own_cpu_seconds()))
        latencies = array("d")
        errors: Counter[str] = Counter()
        clock = time.monotonic

        async def stream(connection: RestConnection) -> None:
            while (sent := clock()) < end:
                try:
                    await connection.send(request)
                    failed = ""
                except RestError as error:
                    failed = f"HTTP {error}"
                done = clock()
                if start <= done <= end:
                    if failed:
                        errors[failed] += 1
                    else:
                        latencies.append(done - sent)
                if failed:
                    await asyncio.sleep(_ERROR_BACKOFF_S)

        await asyncio.gather(*(stream(connection) for connection in connections))
        now = _own_cpu_seconds()
        cpu_used = cpu.get("end", now) - cpu.get("start", now)
        conn.send(("done", latencies.tobytes(), dict(errors), cpu_used))
    finally:
        for connection in connections:
            await connection.close()


def _worker_main(conn: multiprocessing.connection.Connection, plan: _WorkerPlan) -> None:
    try:
        asyncio.run(_drive(conn, plan))
    except EOFError:
        pass  # the parent gave up on this run (another worker failed) and closed the pipe
    except Exception as error:  # reported to the parent, which raises it with context
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        conn.close()


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def run_load(
    target: str,
    model: str,
    request: bytes,
    *,
    rows_per_request: int,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 2.0,
    processes: int = 1,
    timeout_s: float = 30.0,
    probes: Sequence[WindowProbe] = (),
    connections: int = 1,
    protocol: str = "grpc",
) -> LoadResult:
    """Runs one closed-loop point and returns its measurements.

    `connections`: TCP connections per load process (1: all its streams share one).

    `request` is a serialized ModelInferRequest (see make_request), or for protocol
    "rest-binary" / "rest-json" a whole HTTP request (make_http_request). `probes` are sampled at
    the window's start and end (ProcessCpu of the server, say); SystemCpu always is.
    """
    if concurrency < 1 or processes < 1 or duration_s <= 0:
        raise ValueError("concurrency, processes and duration must be positive")
    streams = [n for n in _split(concurrency, min(processes, concurrency)) if n]
    context = multiprocessing.get_context("spawn")
    workers: list[tuple[Any, multiprocessing.connection.Connection]] = []
    try:
        for n in streams:
            parent_end, child_end = context.Pipe()
            plan = _WorkerPlan(target, request, n, timeout_s, connections, protocol)
            proc = context.Process(target=_worker_main, args=(child_end, plan), daemon=True)
            proc.start()
            child_end.close()
            workers.append((proc, parent_end))
        outputs: dict[str, list[int]] = {}
        for _, conn in workers:
            kind, payload = _receive(conn, timeout_s + 60)
            if kind != "ready":
                raise RuntimeError(f"load against {target} model {model!r} failed: {payload}")
            outputs = payload
        start = time.monotonic() + _GO_SLACK_S + warmup_s
        end = start + duration_s
        for _, conn in workers:
            conn.send(("go", start, end))
        observed = _observe([SystemCpu(), *probes], start, end)
        latencies: list[np.ndarray] = []
        errors: Counter[str] = Counter()
        client_cpu = 0.0
        for _, conn in workers:
            kind, *rest = _receive(conn, timeout_s + 60)
            if kind != "done":
                raise RuntimeError(f"load against {target} model {model!r} failed: {rest[0]}")
            raw, worker_errors, cpu_used = rest
            latencies.append(np.frombuffer(raw, dtype=np.float64))
            errors.update(worker_errors)
            client_cpu += cpu_used
    finally:
        for proc, conn in workers:
            conn.close()
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    all_latencies = np.concatenate(latencies) if latencies else np.empty(0)
    return _summarize(
        target, model, concurrency, len(streams), rows_per_request, duration_s,
        all_latencies, dict(errors), client_cpu, observed, outputs,
    )  # fmt: skip


def _receive(conn: multiprocessing.connection.Connection, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise RuntimeError(f"load worker sent nothing for {timeout:g} s")
    try:
        return conn.recv()
    except EOFError:
        raise RuntimeError("load worker died without a report") from None


def _observe(probes: Sequence[WindowProbe], start: float, end: float) -> dict[str, float]:
    """Samples every probe at both ends of [start, end] while the workers run."""
    time.sleep(max(0.0, start - time.monotonic()))
    for probe in probes:
        probe.begin()
    started = time.monotonic()
    time.sleep(max(0.0, end - time.monotonic()))
    elapsed = time.monotonic() - started
    observed: dict[str, float] = {}
    for probe in probes:
        observed.update(probe.end(elapsed))
    return observed


def _summarize(
    target: str,
    model: str,
    concurrency: int,
    processes: int,
    rows: int,
    duration: float,
    latencies: np.ndarray,
    errors: dict[str, int],
    client_cpu: float,
    observed: dict[str, float],
    outputs: dict[str, list[int]],
) -> LoadResult:
    ms = latencies * 1000.0
    if ms.size:
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        stats = {
            "p50": float(p50), "p95": float(p95), "p99": float(p99),
            "max": float(ms.max()), "mean": float(ms.mean()),
        }  # fmt: skip
    else:
        stats = {key: float("nan") for key in ("p50", "p95", "p99", "max", "mean")}
    throughput = ms.size / duration
    return LoadResult(
        target=target,
        model=model,
        concurrency=concurrency,
        processes=processes,
        rows_per_request=rows,
        duration_s=duration,
        requests=int(ms.size),
        errors=errors,
        throughput_rps=throughput,
        rows_per_s=throughput * rows,
        latency_ms=stats,
        client_cpu_s_per_s=client_cpu / duration,
        observed=observed,
        response_outputs=outputs,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clients.bench.load",
        description="Closed-loop ModelInfer load against any OIP v2 server; prints JSON.",
    )
    parser.add_argument("--target", required=True, help="HOST:PORT")
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", default="")
    parser.add_argument(
        "--input",
        type=InputSpec.parse,
        action="append",
        required=True,
        metavar="NAME:DATATYPE:SHAPE",
        help="e.g. input:FP32:1x64; repeat for more inputs",
    )
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--pid", type=int, action="append", default=[], help="observe its CPU")
    parser.add_argument(
        "--protocol", choices=("grpc", *PROTOCOLS), default="grpc",
        help="gRPC, or REST (OIP v2 over HTTP) with binary tensor data or JSON",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.protocol == "grpc":
        request = make_request(args.model, args.input, version=args.version)
    else:
        request = make_http_request(
            args.target, args.model, args.input,
            binary=args.protocol == "rest-binary", version=args.version,
        )  # fmt: skip
    result = run_load(
        args.target,
        args.model,
        request,
        rows_per_request=args.input[0].rows,
        concurrency=args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        processes=args.processes,
        probes=[ProcessCpu(f"pid{pid}", pid) for pid in args.pid],
        protocol=args.protocol,
    )
    json.dump(result.to_dict(), sys.stdout, indent=2)
    print()
    return 1 if result.error_count or not result.requests else 0


if __name__ == "__main__":
    sys.exit(main())

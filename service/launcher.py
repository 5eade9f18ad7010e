"""The serving process's one door into worker-side code (service/worker/).

Worker-side modules import scikit-learn, torch, skl2onnx and onnx; the serving process must
never import them (import-linter contracts in pyproject.toml). So a worker process is started
on a target named as text, "module:function", which only the child imports, and the parent
reads what the child reports over a one-way pipe of JSON messages (nothing is unpickled).
`WorkerProcess` is the one lifecycle of such a worker (training, import and explain alike).
Standard library only.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import multiprocessing
import multiprocessing.forkserver
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, SpawnContext
from typing import Any

log = logging.getLogger(__name__)

#: Worker-side entry points, by name (see service/worker/entry.py).
RUN_JOB = "service.worker.entry:run"
RUN_EXPLAIN = "service.worker.entry:run_explain"
RUN_COMPARE = "service.worker.entry:run_compare"
RUN_CALIBRATION_ROWS = "service.worker.entry:run_calibration_rows"
MATERIALIZE_BUILTIN = "service.worker.datasets.builtin:materialize_builtin"
GENERATE_SCALE = "service.worker.datasets.scale:generate"
INGEST_TABLE = "service.worker.datasets.tabular:ingest"
INGEST_IMAGES = "service.worker.datasets.images:ingest"
READY = "service.launcher:ready"


#: What a warm worker has imported before it forks: what every job imports first (3-5 s on
#: two cores, torch alone 1.5 s). Names as text: this process never imports them.
WARM_PRELOAD = (
    "numpy", "threadpoolctl", "onnxruntime", "pyarrow", "sklearn", "skl2onnx", "onnx", "torch",
    "service.worker.entry", "service.worker.pipeline", "service.worker.classical",
    "service.worker.deep", "service.worker.importing", "service.worker.importance", "PIL",
    "service.worker.warm",
)  # fmt: skip

#: How workers start: "spawn" (a fresh interpreter each) until start_warm_workers() has a
#: preloaded fork server ready.
_context: SpawnContext | ForkServerContext = multiprocessing.get_context("spawn")


def start_warm_workers(preload: Sequence[str] = WARM_PRELOAD) -> None:
    """Makes later workers fork from a server process that has already imported `preload`.

    That server is multiprocessing's forkserver: started fresh (never forked from this gRPC
    process), it imports the modules once, then forks one child per worker, so each job
    still gets a process of its own (cancel, deadline, crash and PR_SET_PDEATHSIG as before;
    nothing is shared between jobs) without paying the imports. It exits when this process
    does, and its children with it. Blocking until the preload is done: call it off the
    event loop; workers started meanwhile are spawned as before.
    """
    global _context
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    multiprocessing.forkserver.ensure_running()
    ready = context.Process(target=run_by_name, args=(READY,), name="paradigm-warm-up")
    ready.start()  # answered once the fork server has imported everything
    ready.join()
    ready.close()
    _context = context
    log.info("warm workers ready: jobs fork from a process with %s imported", ", ".join(preload))


def warm() -> bool:
    """Whether workers now fork from the preloaded server."""
    return _context.get_start_method() == "forkserver"


def ready() -> None:
    """The fork server's first child: proves it has finished its preload."""


def run_by_name(target: str, *args: Any, **kwargs: Any) -> Any:
    """Imports `target` ("module:function") and calls it: the function a spawned child runs."""
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)(*args, **kwargs)


@dataclass(frozen=True)
class WorkerExit:
    """How a worker ended: its last message (None if it sent none) and its exit code."""

    final: dict[str, Any] | None
    exitcode: int | None
    #: Its deadline passed and it was stopped for it.
    timed_out: bool = False
    #: Seconds from asking for the process to its first message: what starting it cost.
    start_seconds: float | None = None
    #: "warm" (forked from the preloaded server) or "cold" (a fresh interpreter).
    start: str = "cold"

    @property
    def cpu_seconds(self) -> float:
        """The CPU time the worker (and its children) used, from its last message's rusage:
        what its work costs."""
        usage = (self.final or {}).get("usage") or {}
        return float(usage.get("cpu_seconds", 0.0))


class WorkerProcess:
    """One worker process: spawned, read to the end of its pipe, stopped, reaped.

    The child is started with the "spawn" method (never fork after gRPC has started) and
    runs `target(spec, connection, **options)`. It dies with the server by itself
    (PR_SET_PDEATHSIG, set in service/worker/entry.py). Stopping sends SIGTERM first, so
    that the worker's own handler runs (a DDP job's kills its torchrun process group), then
    SIGKILL after `grace` seconds; a worker with nothing to clean up (grace 0) is SIGKILLed
    at once, and also as soon as its pipe closes rather than waited for.
    """

    def __init__(
        self, target: str, spec: Any, *, name: str, who: str, grace: float, **options: Any
    ) -> None:
        context = _context
        self.start = "warm" if context.get_start_method() == "forkserver" else "cold"
        self._receiver, self._sender = context.Pipe(duplex=False)
        self._process = context.Process(
            target=run_by_name,
            args=(target, spec, self._sender),
            kwargs=options,
            name=name,
            daemon=True,
        )
        self._who = who
        self._grace = grace
        self._stopping = False
        self._closed = False
        self._kill_timer: asyncio.TimerHandle | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid

    async def run(
        self,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        *,
        timeout: float | None = None,
        on_timeout: Callable[[], None] | None = None,
    ) -> WorkerExit:
        """Starts the worker and returns once it has exited; its events go to on_event.

        Past `timeout` seconds on_timeout() is called and the worker is stopped, unless it
        is being stopped already. If run() itself is cancelled, the worker is killed.
        """
        loop = asyncio.get_running_loop()
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            if self._stopping:
                return
            timed_out = True
            if on_timeout is not None:
                on_timeout()
            self.stop()

        timer = None if timeout is None else loop.call_later(timeout, expire)
        asked = time.perf_counter()
        first: list[float] = []

        def event(message: dict[str, Any]) -> None:
            if not first:
                first.append(time.perf_counter() - asked)
            if on_event is not None:
                on_event(message)

        try:
            try:
                # Off the loop: a fork server still importing answers only when it is done.
                await loop.run_in_executor(None, self._process.start)
            finally:
                self._sender.close()  # our copy: the pipe reports EOF once the child's closes
            if self._stopping:  # stop() came while it was starting
                self._signal()
            final = await receive(self._receiver, event, who=self._who)
            if self._grace > 0:
                # It may still be cleaning up: waited for, within its deadline.
                await loop.run_in_executor(None, self._process.join)
        finally:
            if timer is not None:
                timer.cancel()
            self._receiver.close()
            exitcode = await self._reap()
        if not first and final is not None:
            first.append(time.perf_counter() - asked)
        return WorkerExit(final, exitcode, timed_out, first[0] if first else None, self.start)

    def stop(self) -> None:
        """SIGTERM now, SIGKILL after the grace (at once if the grace is 0); once. Asked
        before the process has started (its start runs off the loop), it is stopped as
        soon as it has."""
        if self._stopping or self._closed:
            return
        self._stopping = True
        if self._process.pid is not None:
            self._signal()

    def _signal(self) -> None:
        if not self._alive():
            return
        if self._grace <= 0:
            self._process.kill()
            return
        self._process.terminate()
        self._kill_timer = asyncio.get_running_loop().call_later(self._grace, self._kill_late)

    def kill(self) -> None:
        if self._alive():
            self._process.kill()

    def _kill_late(self) -> None:
        if self._alive():
            log.warning("%s: worker ignored SIGTERM; killing it", self._who)
            self._process.kill()

    def _alive(self) -> bool:
        return not self._closed and self._process.pid is not None and self._process.exitcode is None

    async def _reap(self) -> int | None:
        """Joins the worker off the event loop and frees its descriptors.

        A worker still running here is killed first: it has a grace of 0, or run() was
        cancelled. A finished Process object holds two descriptors until closed (measured:
        2 leaked per job, and up to a thousand finished jobs are kept).
        """
        if self._process.pid is None:  # it never started
            return None
        self.kill()
        await asyncio.get_running_loop().run_in_executor(None, self._process.join)
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        exitcode = self._process.exitcode
        self._closed = True
        self._process.close()
        return exitcode


async def receive(
    receiver: Connection,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    *,
    who: str = "a worker",
) -> dict[str, Any] | None:
    """Reads a worker's messages from the event loop (add_reader: no thread per worker)
    until its pipe closes: events go to on_event, the last other message is returned."""
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()
    final: dict[str, Any] | None = None
    fd = receiver.fileno()

    def readable() -> None:
        nonlocal final
        try:
            while receiver.poll():
                message = _decode(receiver.recv_bytes())
                if message is None:
                    logging.getLogger(__name__).warning("ignored a malformed message from %s", who)
                elif message.get("type") == "event":
                    if on_event is not None:
                        on_event(message)
                else:
                    final = message
        except (EOFError, OSError):
            loop.remove_reader(fd)  # the pipe stays readable at EOF: stop being called
            if not closed.done():
                closed.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await closed
    finally:
        # Always, not only while `closed` is pending: cancelling the caller cancels `closed`
        # too. A reader left registered on a descriptor that is then closed makes the next
        # pipe given that number silent: add_reader finds it registered and never re-adds
        # it to epoll (measured: the next explanation hung until its deadline).
        loop.remove_reader(fd)
    return final


def _decode(data: bytes) -> dict[str, Any] | None:
    """A worker's message: a JSON object, or None for anything else."""
    try:
        message = json.loads(data)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None

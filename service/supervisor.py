"""`paradigm-server --workers N`: N serving processes behind one port, and their keeper.

Python's gRPC answers a request in ~0.5 ms of one core, so one process serves one core's
worth; more cores need more processes. gRPC's own recipe for that is SO_REUSEPORT: every
worker listens on the same port and the kernel spreads connections over them. Here it is
used for our workers only: the supervisor first checks that no other program holds the
port (a plain bind), then keeps a reserving socket on it for as long as it runs.

The supervisor starts the owner (slot 0, which runs jobs: service/role.py) first, then the
others; restarts a worker that dies (health says NOT_SERVING until it is back); serves one
/metrics for all of them from prometheus-client's multiprocess files; and on SIGTERM stops
them all with the usual grace.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from service.role import ServingRole
from service.settings import Settings

log = logging.getLogger("paradigm.supervisor")

#: The first restart of a worker waits this long, doubling up to RESTART_MAX_DELAY_S while
#: it keeps dying within STABLE_AFTER_S of its start (a crash loop must not spin a core).
RESTART_DELAY_S = 0.5
RESTART_MAX_DELAY_S = 10.0
STABLE_AFTER_S = 30.0
#: How long a worker may take to become ready at start before the server gives up.
START_TIMEOUT_S = 300.0

_PR_SET_PDEATHSIG = 1


class StartFailed(Exception):
    """A worker could not start (its own log line says why)."""


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound SO_REUSEPORT socket holding the port for our workers.

    A given port is first bound plainly: that fails when any other program listens on it
    (with or without SO_REUSEPORT), so a taken port is refused as a single server refuses it.
    """
    address = host.strip("[]")
    family, kind, proto, _, sockaddr = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0]
    if port:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(sockaddr)
    reservation = socket.socket(family, kind, proto)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reservation.bind(sockaddr)
    return reservation


def die_with_supervisor() -> None:
    """SIGTERM (a graceful stop) when the supervisor dies, however it dies."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    parent = multiprocessing.parent_process()
    if parent is not None and not parent.is_alive():
        os._exit(1)


#: A serving worker's main: serves `settings` in `role` until SIGTERM (service/cli.py's).
WorkerMain = Callable[[Settings, ServingRole], None]


class Supervisor:
    def __init__(self, settings: Settings, workers: int, worker_main: WorkerMain) -> None:
        self.settings = settings
        self._worker_main = worker_main
        self.workers = workers
        self._context = multiprocessing.get_context("spawn")
        self._run_dir = Path(tempfile.mkdtemp(prefix="paradigm-"))
        self._metrics_dir = self._run_dir / "metrics"
        self._metrics_dir.mkdir()
        # Read by prometheus-client at import, in every worker this process spawns.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(self._metrics_dir)
        self._flags: Any = self._context.Array("b", workers, lock=False)
        self._generation: Any = self._context.Array("q", 1, lock=False)
        self._processes: list[BaseProcess | None] = [None] * workers
        self._started_at = [0.0] * workers
        self._delays = [RESTART_DELAY_S] * workers
        self._restart_at: dict[int, float] = {}
        self._wake_read, self._wake_write = os.pipe()
        self._stopping = False
        self._http: Any = None
        self._metrics: Any = None

    def role(self, slot: int) -> ServingRole:
        return ServingRole(
            slot=slot,
            workers=self.workers,
            owner_address=f"unix:{self._run_dir / 'owner.sock'}",
            metrics_dir=str(self._metrics_dir),
            ready_flags=self._flags,
            registry_generation=self._generation,
        )

    def run(self) -> int:
        settings = self.settings
        try:
            reservation = reserve_port(settings.host, settings.port)
        except OSError as exc:
            log.error("could not start: cannot use %s:%d (%s)", settings.host, settings.port, exc)
            self._cleanup()
            return 1
        port = reservation.getsockname()[1]
        update: dict[str, Any] = {"port": port, "metrics_port": -1, "port_file": None, "workers": 1}
        http_reservation = None
        if settings.http_port >= 0:  # REST shares its port the same way
            try:
                http_reservation = reserve_port(settings.host, settings.http_port)
            except OSError as exc:
                log.error("could not start: cannot use HTTP port %d (%s)", settings.http_port, exc)
                reservation.close()
                self._cleanup()
                return 1
            update |= {"http_port": http_reservation.getsockname()[1], "http_port_file": None}
        worker_settings = settings.model_copy(update=update)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        try:
            self._serve_metrics()
            self._start(worker_settings, 0)
            self._wait_ready([0])
            for slot in range(1, self.workers):
                self._start(worker_settings, slot)
            self._wait_ready(list(range(1, self.workers)))
        except StartFailed as exc:
            log.error("could not start: %s", exc)
            self._stop_all()
            self._cleanup()
            for held in (reservation, http_reservation):
                if held is not None:
                    held.close()
            return 1
        if settings.http_port_file and http_reservation is not None:
            _write_atomically(settings.http_port_file, str(update["http_port"]))
        if settings.port_file:
            _write_atomically(settings.port_file, str(port))
        log.info("%d serving workers on %s:%d", self.workers, settings.host, port)
        self._keep(worker_settings)
        self._stop_all()
        for held in (reservation, http_reservation):
            if held is not None:
                held.close()
        self._cleanup()
        return 0

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")

    def _serve_metrics(self) -> None:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        from service.metrics import SupervisorMetrics

        self._metrics = SupervisorMetrics(None)
        self._metrics.workers_configured.set(self.workers)
        self._metrics.workers_ready.set(0)
        if self.settings.metrics_port < 0:
            return
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self._metrics_dir))
        self._http, _ = start_http_server(
            self.settings.metrics_port, addr=self.settings.host, registry=registry
        )

    def _start(self, settings: Settings, slot: int) -> None:
        self._flags[slot] = 0
        process = self._context.Process(
            target=self._worker_main,
            args=(settings, self.role(slot)),
            name=f"paradigm-serving-{slot}",
        )
        process.start()
        self._processes[slot] = process
        self._started_at[slot] = time.monotonic()
        log.info("serving worker %d started (pid %s)", slot, process.pid)

    def _wait_ready(self, slots: list[int]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(self._flags[slot] for slot in slots):
            if self._stopping:
                raise StartFailed("stopped while starting")
            for slot in slots:
                process = self._processes[slot]
                if process is not None and not process.is_alive():
                    raise StartFailed(f"serving worker {slot} exited with {process.exitcode}")
            if time.monotonic() > deadline:
                raise StartFailed(f"serving workers not ready after {START_TIMEOUT_S:g} s")
            time.sleep(0.05)
        self._metrics.workers_ready.set(sum(self._flags[:]))

    def _keep(self, settings: Settings) -> None:
        """Until a signal: restarts workers that die, with a growing delay if they keep dying."""
        while not self._stopping:
            sentinels = {p.sentinel: slot for slot, p in enumerate(self._processes) if p}
            timeout = None
            if self._restart_at:
                timeout = max(0.0, min(self._restart_at.values()) - time.monotonic())
            ready = multiprocessing.connection.wait([*sentinels, self._wake_read], timeout)
            self._metrics.workers_ready.set(sum(self._flags[:]))
            if self._stopping:
                return
            for handle in ready:
                if handle == self._wake_read:
                    os.read(self._wake_read, 64)
                    continue
                self._died(sentinels[handle])  # type: ignore[index]
            now = time.monotonic()
            for slot, at in list(self._restart_at.items()):
                if at <= now:
                    del self._restart_at[slot]
                    self._metrics.worker_restarts.labels(str(slot)).inc()
                    self._start(settings, slot)

    def _died(self, slot: int) -> None:
        from prometheus_client import multiprocess

        process = self._processes[slot]
        assert process is not None
        process.join()
        self._flags[slot] = 0
        self._processes[slot] = None
        if process.pid is not None:
            multiprocess.mark_process_dead(process.pid, str(self._metrics_dir))
        if time.monotonic() - self._started_at[slot] > STABLE_AFTER_S:
            self._delays[slot] = RESTART_DELAY_S
        delay = self._delays[slot]
        self._delays[slot] = min(delay * 2, RESTART_MAX_DELAY_S)
        log.error(
            "serving worker %d (pid %s) exited with %s; restarting in %.1f s",
            slot, process.pid, process.exitcode, delay,
        )  # fmt: skip
        self._restart_at[slot] = time.monotonic() + delay

    def _stop_all(self) -> None:
        """SIGTERM to every worker (each drains its RPCs and stops its jobs), then SIGKILL
        for any still running after the grace."""
        live = [p for p in self._processes if p is not None and p.is_alive()]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)  # type: ignore[arg-type]
        settings = self.settings
        deadline = time.monotonic() + settings.grace_seconds + settings.cancel_grace_seconds + 10
        for process in live:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("serving worker pid %s ignored SIGTERM; killing it", process.pid)
                process.kill()
                process.join()

    def _cleanup(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        os.close(self._wake_read)
        os.close(self._wake_write)
        shutil.rmtree(self._run_dir, ignore_errors=True)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def supervise(settings: Settings, worker_main: WorkerMain) -> int:
    """Runs `settings.resolved_workers()` serving workers until SIGTERM; the exit code."""
    return Supervisor(settings, settings.resolved_workers(), worker_main).run()

"""Server subprocesses for scripts and tests: start on free ports, wait until healthy, stop.

`paradigm_server` is what most callers want: `paradigm-server` on 127.0.0.1 with gRPC on
port 0 (the server picks a free one and writes it to a port file), metrics on a free port or
off, its data directory given, its output in `<workdir>/<name>.log`. It yields a
`ServerProcess` once the port is known and grpc.health.v1 says SERVING, and stops the server
on leaving (SIGTERM, then SIGKILL after a grace period).

`server_process` does the same for any command that understands `--port-file` (the bench's
bare server, a console script run with environment variables instead of flags). The pieces
(`free_port`, `paradigm_server_command`, `wait_serving`, `stop_process`, `log_tail`) are
public for callers that must run the process themselves, e.g. to time a cold start.

    with paradigm_server(workdir, "demo", workdir / "data") as server:
        with ParadigmClient(server.target) as client: ...
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

HOST = "127.0.0.1"
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 30.0
METRICS_OFF = -1
# How often a starting server's port file is looked at.
_PORT_POLL_S = 0.05
# Short reconnect backoff while polling health: the default (1 s, growing) would hide when
# the port opens.
_FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 10),
    ("grpc.min_reconnect_backoff_ms", 10),
    ("grpc.max_reconnect_backoff_ms", 10),
]


class ServerStartError(RuntimeError):
    """The server exited, or said nothing, before it was ready; the message has its log."""


def free_port() -> int:
    """A port free right now; the tiny race with other programs is acceptable here."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def paradigm_server_command() -> list[str]:
    """The `paradigm-server` console script next to this interpreter, else `-m service.cli`."""
    script = shutil.which("paradigm-server", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "service.cli"]


def log_tail(log: Path, lines: int = 25) -> str:
    """The last lines of a server's log, for an error message."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_process(process: subprocess.Popen[bytes], name: str, grace: float = STOP_GRACE_S) -> int:
    """SIGTERM, then SIGKILL if it is still running after `grace` s; returns the exit code."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        print(f"{name} ignored SIGTERM for {grace:g} s; killing it", file=sys.stderr)
        process.kill()
        return process.wait()


def wait_serving(target: str, process: subprocess.Popen[bytes], deadline: float) -> float:
    """Polls grpc.health.v1 (plaintext, overall service) until SERVING, before the monotonic
    `deadline`; returns the monotonic time it first said so."""
    request = health_pb2.HealthCheckRequest(service="")
    with grpc.insecure_channel(target, options=_FAST_RECONNECT) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerStartError(f"{target} not SERVING before the deadline")
            if process.poll() is not None:
                raise ServerStartError(f"server exited with {process.returncode} while starting")
            try:
                response = stub.Check(request, timeout=min(remaining, 1.0), wait_for_ready=True)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic()
            except grpc.RpcError:
                pass  # not listening yet (deadline) or health not set yet (NOT_FOUND)
            time.sleep(0.005)


@dataclass(frozen=True)
class ServerProcess:
    """A started server: its process, where to dial it, and its log."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    metrics_port: int | None = None
    host: str = HOST

    @property
    def target(self) -> str:
        """host:port of its gRPC endpoint."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def metrics_url(self) -> str | None:
        """Its Prometheus endpoint, or None when metrics are off."""
        if self.metrics_port is None:
            return None
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def stop(self, grace: float = STOP_GRACE_S) -> int:
        """Stops it (SIGTERM, SIGKILL after `grace` s) unless it has exited; its exit code."""
        return stop_process(self.process, self.name, grace)


@contextlib.contextmanager
def server_process(
    command: Sequence[str],
    *,
    workdir: Path,
    name: str,
    env: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT_S,
    health: bool = False,
    metrics_port: int | None = None,
) -> Iterator[ServerProcess]:
    """Runs `command --port-file <workdir>/<name>.port` with its output appended to
    `<workdir>/<name>.log`, in a session of its own; yields it once the port file is written
    (and, with `health`, once grpc.health.v1 says SERVING); always stops it.

    The environment is `env` laid over `base_env` (default: this process's). `metrics_port`
    is recorded on the result, for a command that was told to serve metrics there.
    """
    port_file, log = workdir / f"{name}.port", workdir / f"{name}.log"
    port_file.unlink(missing_ok=True)
    environment = {**(os.environ if base_env is None else base_env), **(env or {})}
    with log.open("ab") as log_file:
        # Own session: a Ctrl-C reaches only us, and we stop the server with SIGTERM.
        process = subprocess.Popen(
            [*command, "--port-file", str(port_file)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if process.poll() is not None:
                raise ServerStartError(f"{name} exited with {process.returncode}:\n{log_tail(log)}")
            if time.monotonic() > deadline:
                raise ServerStartError(f"{name} wrote no port in {timeout:g} s:\n{log_tail(log)}")
            time.sleep(_PORT_POLL_S)
        server = ServerProcess(
            name=name,
            process=process,
            port=int(port_file.read_text().strip()),
            log=log,
            metrics_port=metrics_port,
        )
        if health:
            try:
                wait_serving(server.target, process, deadline)
            except ServerStartError as error:
                raise ServerStartError(f"{name}: {error}:\n{log_tail(log)}") from None
        yield server
    finally:
        stop_process(process, name)


@contextlib.contextmanager
def paradigm_server(
    workdir: Path,
    name: str,
    data_dir: Path | None,
    *,
    env: Mapping[str, str] | None = None,
    metrics: bool = True,
    args: Sequence[str] = (),
    command: Sequence[str] | None = None,
    base_env: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT_S,
) -> Iterator[ServerProcess]:
    """`paradigm-server` on 127.0.0.1, gRPC on a port it picks, serving data_dir (None: as
    PARADIGM_DATA_DIR or its default say); yields it once healthy, always stops it.

    metrics: serve Prometheus metrics on a free port (`.metrics_port`, `.metrics_url`), or
    not at all. args: more flags. command: the executable to run instead of
    `paradigm_server_command()`. The rest as for `server_process`.
    """
    metrics_port = free_port() if metrics else METRICS_OFF
    full_command = [
        *(command or paradigm_server_command()), "--host", HOST, "--port", "0",
        "--metrics-port", str(metrics_port),
        *(["--data-dir", str(data_dir)] if data_dir is not None else []), *args,
    ]  # fmt: skip
    with server_process(
        full_command,
        workdir=workdir,
        name=name,
        env=env,
        base_env=base_env,
        timeout=timeout,
        health=True,
        metrics_port=metrics_port if metrics else None,
    ) as server:
        yield server

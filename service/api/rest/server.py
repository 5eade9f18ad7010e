"""The REST listener: a socket we bind ourselves, served by uvicorn on the running loop.

uvicorn runs as a task of the loop grpc.aio already uses, so REST and gRPC share one
process, one data plane and one set of inference threads. Binding the socket here (not in
uvicorn) keeps port 0 and the port-taken error ours, and lets a multi-process launcher ask
for SO_REUSEPORT explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import uvicorn

from service.api.auth import Scope, Tokens
from service.api.rest.routes import RestLimits, build_rest_app
from service.serving.cascade import CascadePlane
from service.settings import Settings

log = logging.getLogger(__name__)

#: Pending connections the kernel queues before accept (uvicorn's and Triton's default).
BACKLOG = 2048


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on host:port (0 = any free port).

    Without reuse_port a port another process holds fails here with OSError, as gRPC's
    does with grpc.so_reuseport=0: two servers must not split one port's connections by
    accident. With it, processes that all ask for it share the port (the kernel spreads
    connections between them).
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        # SO_REUSEADDR only lets a restart bind past connections in TIME_WAIT; it does not
        # share a port that is listening.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def ssl_context(
    cert_file: Path | None, key_file: Path | None, client_ca_file: Path | None
) -> ssl.SSLContext | None:
    """The HTTPS context from the PEM files gRPC uses (checked already by
    auth.server_credentials); a client CA means client certificates are required."""
    if cert_file is None or key_file is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file is not None:
        context.load_verify_locations(client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class _Server(uvicorn.Server):
    """uvicorn.Server that leaves signals alone: the process's owner (service/cli.py)
    handles SIGTERM and stops everything in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class RestServer:
    """Serves an ASGI app on a socket until stop()."""

    def __init__(self, app: Any, sock: socket.socket, *, tls: ssl.SSLContext | None) -> None:
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            # httptools: the C parser; h11 (pure Python) measured several times slower.
            http="httptools",
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            # Nothing sits in front to trust X-Forwarded-* from; the middleware costs time.
            proxy_headers=False,
            ssl_context_factory=None if tls is None else (lambda config, default: tls),
            # An idle keep-alive connection costs one socket; clients reuse theirs.
            timeout_keep_alive=30,
        )
        config.load()
        # Its INFO lines ("Started server process", "Shutting down") repeat service.app's
        # under a misleading logger name; its warnings and errors still show.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self.tls = tls is not None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self.sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the REST server stopped during start-up")
            await asyncio.sleep(0.01)

    async def stop(self, grace: float) -> None:
        """Stops accepting, lets requests in progress finish (up to grace), closes."""
        if self._task is None:
            self.sock.close()
            return
        self._server.config.timeout_graceful_shutdown = max(round(grace), 1)
        self._server.should_exit = True
        await asyncio.gather(self._task, return_exceptions=True)


async def start_rest(
    settings: Settings,
    dataplane: CascadePlane,
    tokens: Mapping[str, Scope],
    *,
    ready: Callable[[], bool],
    reuse_port: bool = False,
) -> RestServer:
    """Binds settings.http_port and serves the OIP v2 REST endpoints on it; OSError if the
    port is taken (unless reuse_port), ValueError for unusable TLS files."""
    app = build_rest_app(
        dataplane,
        ready=ready,
        tokens=Tokens(tokens) if tokens else None,
        limits=RestLimits(
            max_body_bytes=settings.max_message_bytes,
            max_in_flight=settings.max_concurrent_rpcs,
            max_batch_size=settings.max_batch_size,
        ),
    )
    tls = ssl_context(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
    try:
        sock = bind_socket(settings.host, settings.http_port, reuse_port=reuse_port)
    except OSError as exc:
        raise RuntimeError(
            f"cannot bind the REST port {settings.host}:{settings.http_port}: {exc.strerror or exc}"
        ) from None
    server = RestServer(app, sock, tls=tls)
    await server.start()
    return server

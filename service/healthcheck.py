"""`python -m service.healthcheck`: exit 0 when the server answers grpc.health.v1 SERVING.

For container HEALTHCHECKs and exec probes, where no grpcurl or grpc_health_probe exists:

    python -m service.healthcheck [--host H] [--port P] [--service NAME] [--timeout S]
                                  [--tls-ca FILE [--tls-server-name NAME]]

The port defaults to PARADIGM_PORT (then 8001), the service to "" (the whole server).
Exit status 0 when the status is SERVING; 1 otherwise (NOT_SERVING, unknown service,
nothing listening, a timeout), with one line on stderr saying why. The health service
needs no token (service/api/auth.py lets it through), so there is no token flag. With
TLS on, give the CA that signed the server's certificate. Imports only gRPC: it runs in
well under a second, also in the serve-only image.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_PORT = 8001


def _default_port() -> int:
    value = os.environ.get("PARADIGM_PORT", "")
    try:
        port = int(value)
    except ValueError:
        return DEFAULT_PORT
    # 0 means "any free port" to the server: nothing a probe could find.
    return port if 0 < port < 65536 else DEFAULT_PORT


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service.healthcheck",
        description="Exit 0 when the Paradigm server's grpc.health.v1 status is SERVING.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="server address (127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=_default_port(), help="gRPC port (PARADIGM_PORT, else 8001)"
    )
    parser.add_argument(
        "--service", default="", help='health service name; "" (default) = the whole server'
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (3)")
    parser.add_argument("--tls-ca", type=Path, help="PEM of the CA of the server's certificate")
    parser.add_argument(
        "--tls-server-name", help="name to check the certificate against (default: --host)"
    )
    return parser.parse_args(argv)


def check(
    target: str,
    service: str = "",
    timeout: float = 3.0,
    root_certificates: bytes | None = None,
    server_name: str | None = None,
) -> tuple[bool, str]:
    """(True, "SERVING") or (False, the reason)."""
    if root_certificates is None:
        channel = grpc.insecure_channel(target)
    else:
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(
            target, grpc.ssl_channel_credentials(root_certificates), options=options
        )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            details = error.details() if isinstance(error, grpc.Call) else str(error)
            name = code.name if code is not None else "ERROR"
            return False, f"{name}: {details}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    target = f"{args.host}:{args.port}"
    try:
        root = args.tls_ca.read_bytes() if args.tls_ca is not None else None
    except OSError as error:
        print(f"unhealthy: cannot read --tls-ca: {error}", file=sys.stderr)
        return 1
    serving, status = check(target, args.service, args.timeout, root, args.tls_server_name)
    if not serving:
        label = f" service {args.service!r}" if args.service else ""
        print(f"unhealthy: {target}{label}: {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`paradigm-server`: flags override PARADIGM_* environment variables, which override defaults."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from service import __version__, logs
from service.errors import ParadigmError, storage_error
from service.role import ServingRole
from service.settings import Settings

log = logging.getLogger("paradigm")


def parse_args(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(
        prog="paradigm-server",
        description="Paradigm: train, export to ONNX and serve classical and deep models.",
        epilog="Every flag can also be set as PARADIGM_<NAME> in the environment.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--host", help="address to bind (PARADIGM_HOST)")
    parser.add_argument("--port", type=int, help="gRPC port, 0 = any free one (PARADIGM_PORT)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus port, 0 = any, -1 = off (PARADIGM_METRICS_PORT)",
    )
    parser.add_argument(
        "--http-port",
        type=int,
        help="OIP v2 REST port, 0 = any, -1 = off (the default) (PARADIGM_HTTP_PORT)",
    )
    parser.add_argument("--data-dir", type=Path, help="models and datasets (PARADIGM_DATA_DIR)")
    parser.add_argument("--port-file", type=Path, help="write the bound gRPC port here")
    parser.add_argument("--http-port-file", type=Path, help="write the bound REST port here")
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="serving device (PARADIGM_DEVICE)"
    )
    parser.add_argument("--max-concurrent-jobs", type=int, help="(PARADIGM_MAX_CONCURRENT_JOBS)")
    parser.add_argument(
        "--auth-tokens-file",
        type=Path,
        help='lines "<scope> <token>", scope predict or admin (PARADIGM_AUTH_TOKENS_FILE)',
    )
    parser.add_argument(
        "--tls-cert-file", type=Path, help="server certificate, PEM (PARADIGM_TLS_CERT_FILE)"
    )
    parser.add_argument(
        "--tls-key-file", type=Path, help="server private key, PEM (PARADIGM_TLS_KEY_FILE)"
    )
    parser.add_argument(
        "--tls-client-ca-file",
        type=Path,
        help="require client certificates from this CA (PARADIGM_TLS_CLIENT_CA_FILE)",
    )
    parser.add_argument(
        "--registry-url",
        help="model metadata: empty = SQLite in the data dir, or postgresql://... "
        "(PARADIGM_REGISTRY_URL)",
    )
    parser.add_argument(
        "--artifacts-url",
        help="model files: empty = <data-dir>/models, a directory, or s3://bucket/prefix "
        "(PARADIGM_ARTIFACTS_URL)",
    )
    parser.add_argument(
        "--mlflow-tracking-uri",
        help="log every training job as an MLflow run there, http(s)://host:port "
        "(PARADIGM_MLFLOW_TRACKING_URI)",
    )
    parser.add_argument(
        "--workers",
        help="serving processes sharing the port, or auto for one per core; keep 1 on a "
        "GPU (PARADIGM_WORKERS)",
    )
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING (PARADIGM_LOG_LEVEL)")
    given = vars(parser.parse_args(argv))
    return {key: value for key, value in given.items() if value is not None}


async def serve(settings: Settings, role: ServingRole | None = None) -> None:
    # Imported here, not at the top: every spawned worker re-imports the main module (this
    # one, for paradigm-server), and the serving stack (gRPC, ONNX Runtime, Prometheus) cost
    # each training, import, explain and ingestion worker ~0.5 s of start it never uses.
    from service.app import build_app

    app = build_app(settings, role=role)
    try:
        await app.start()
    # RuntimeError: grpc's "Failed to bind to address ..."; ValueError: bad tokens or TLS files;
    # OSError and ParadigmError: a data directory that cannot be written (read-only, full).
    except (RuntimeError, ValueError, OSError, ParadigmError) as error:
        if isinstance(error, OSError):
            error = storage_error(error, "cannot use the data directory") or error
        log.error("could not start: %s", error)
        raise SystemExit(1) from None
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("signal received: shutting down")
    await app.stop()


def run_server(settings: Settings, role: ServingRole | None = None) -> None:
    asyncio.run(serve(settings, role))


def serve_worker(settings: Settings, role: ServingRole) -> None:
    """One serving worker of `--workers N` (spawned by service/supervisor.py)."""
    from service.supervisor import die_with_supervisor

    die_with_supervisor()
    logs.configure(settings.log_level)
    run_server(settings, role)


def main(argv: list[str] | None = None) -> None:
    settings = Settings(**parse_args(argv))  # type: ignore[arg-type]
    logs.configure(settings.log_level)
    workers = settings.resolved_workers()
    if workers == 1:
        run_server(settings)
        return
    if settings.device == "cuda":
        log.warning(
            "%d serving workers on CUDA: each holds its own CUDA context and copy of every "
            "model (docs/operations.md)", workers,
        )  # fmt: skip
    from service.supervisor import supervise

    raise SystemExit(supervise(settings, serve_worker))


if __name__ == "__main__":
    main()

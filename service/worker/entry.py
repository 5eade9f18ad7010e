"""Entry points of worker processes (spawn start method): training, import, explain and
compare.

Imports only the standard library at module level: the heavy libraries (scikit-learn,
torch, skl2onnx) are imported inside the child, never in the serving process. Messages to
the parent are JSON objects over a one-way pipe (send_bytes: the parent unpickles nothing
a worker sends, so even a compromised import cannot run code in the server):
  {"type": "event", "stage": ..., "message": ..., "progress": ..., "epoch": ..., ...}
  {"type": "done", "manifest": {...}}      last message on success
  {"type": "error", "message": "..."}      last message on failure
A worker dies with the server (PR_SET_PDEATHSIG): a SIGKILLed server leaves no orphan
writing into a staging directory that the next server clears. A DDP job's torchrun agent and
ranks die with the worker in turn (service/worker/distributed.py). The parent's side of the
pipe is service/launcher.py.
"""

from __future__ import annotations

import ctypes
import json
import logging
import multiprocessing
import os
import resource
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any

from service.errors import describe_failure
from service.training.spec import (
    CalibrationRowsSpec,
    CompareSpec,
    ExplainSpec,
    ImportSpec,
    TrainingSpec,
)

_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


_PR_SET_PDEATHSIG = 1


def run(
    spec: TrainingSpec | ImportSpec, connection: Connection, distributed_backend: str = "auto"
) -> None:
    """Runs one job and reports through `connection`; never raises.

    `distributed_backend` (the server's setting) is used by DDP jobs (spec.world_size > 1).
    """
    _die_with_parent()
    for variable in _THREAD_VARIABLES:
        os.environ[variable] = str(spec.blas_threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")

    def emit(stage: str, message: str = "", **details: Any) -> None:
        send(connection, {"type": "event", "stage": stage, "message": message, **details})

    try:
        # threadpoolctl also reins in BLAS pools that numpy started before the variables
        # above were set (the spawned child re-imports the parent's modules first).
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=spec.blas_threads):
            from service.worker import importing, pipeline

            if isinstance(spec, TrainingSpec):
                manifest = pipeline.run_training(spec, emit, backend=distributed_backend)
            else:
                manifest = importing.run_import(spec, emit)
        send(connection, {"type": "done", "manifest": asdict(manifest), "usage": _usage()})
    except BaseException as exc:
        logging.getLogger("paradigm.worker").error(
            "job %s failed:\n%s", spec.job_id, traceback.format_exc()
        )
        send(connection, {"type": "error", "message": describe_failure(exc), "usage": _usage()})
    finally:
        connection.close()


def run_explain(spec: ExplainSpec, connection: Connection) -> None:
    """Runs one explanation (importance.compute) and reports through `connection`; never raises.

    Last message: {"type": "done", "result": {...}, "usage": {...}}, or {"type": "error",
    "message": ..., "status": <gRPC status name of a ParadigmError, else "">, "usage": ...}.
    """

    def compute() -> dict[str, Any]:
        from service.worker import importance

        return importance.compute(spec)

    _answer(connection, spec.blas_threads, "explain", compute)


def run_compare(spec: CompareSpec, connection: Connection) -> None:
    """Scores models on their shared held-out rows (comparison.compute); reports as
    run_explain does; never raises."""

    def compute() -> dict[str, Any]:
        from service.worker import comparison

        return comparison.compute(spec)

    _answer(connection, spec.blas_threads, "compare", compute)


def run_calibration_rows(spec: CalibrationRowsSpec, connection: Connection) -> None:
    """Writes a cascade's calibration rows (calibration.write_rows); answers as run_explain."""

    def compute() -> dict[str, Any]:
        from service.worker import calibration

        return calibration.write_rows(spec)

    _answer(connection, spec.blas_threads, "calibration rows", compute)


def _answer(
    connection: Connection, blas_threads: int, what: str, compute: Callable[[], dict[str, Any]]
) -> None:
    """Runs `compute` in a worker with its BLAS threads bounded and sends its one answer."""
    _die_with_parent()
    for variable in _THREAD_VARIABLES:
        os.environ[variable] = str(blas_threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=blas_threads):
            result = compute()
        send(connection, {"type": "done", "result": result, "usage": _usage()})
    except BaseException as exc:
        from service.errors import ParadigmError

        status = exc.status.name if isinstance(exc, ParadigmError) else ""
        if not status:
            log = logging.getLogger("paradigm.worker")
            log.error("%s failed:\n%s", what, traceback.format_exc())
        message = {"type": "error", "message": describe_failure(exc), "status": status}
        send(connection, {**message, "usage": _usage()})
    finally:
        connection.close()


def send(connection: Connection, message: dict[str, Any]) -> None:
    """One message as JSON; numpy values become numbers or lists, NaN stays NaN."""
    connection.send_bytes(json.dumps(message, default=_plain).encode())


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays, without importing numpy here
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def _die_with_parent() -> None:
    """Asks Linux to SIGKILL this worker when the server dies, however it dies."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    before = os.getppid()
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != before:
        os._exit(1)  # the parent died before the line above took effect
    if multiprocessing.get_start_method(allow_none=True) == "forkserver":
        # Forked by the warm fork server: that is the parent the signal follows, and it
        # exits as soon as the server does (service/launcher.py).
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)  # the server died before the child got here


def _usage() -> dict[str, float]:
    """CPU-seconds this worker (and anything it started) consumed: the job's CPU cost."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_seconds": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime}

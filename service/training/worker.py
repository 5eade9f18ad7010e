"""Entry point of a training/import worker process (spawn start method).

Imports only the standard library at module level: the heavy libraries (scikit-learn,
torch, skl2onnx) are imported inside the child, never in the serving process. Messages to
the parent are JSON objects over a one-way pipe (send_bytes: the parent unpickles nothing
a worker sends, so even a compromised import cannot run code in the server):
  {"type": "event", "stage": ..., "message": ..., "progress": ..., "epoch": ..., ...}
  {"type": "done", "manifest": {...}}      last message on success
  {"type": "error", "message": "..."}      last message on failure
A worker dies with the server (PR_SET_PDEATHSIG): a SIGKILLed server leaves no orphan
writing into a staging directory that the next server clears. A DDP job's torchrun agent and
ranks die with the worker in turn (service/training/distributed.py).
"""

from __future__ import annotations

import asyncio
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

from service.training.spec import ExplainSpec, ImportSpec, TrainingSpec

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
            from service.training import pipeline

            if isinstance(spec, TrainingSpec):
                manifest = pipeline.run_training(spec, emit, backend=distributed_backend)
            else:
                manifest = pipeline.run_import(spec, emit)
        send(connection, {"type": "done", "manifest": asdict(manifest), "usage": _usage()})
    except BaseException as exc:
        logging.getLogger("paradigm.worker").error(
            "job %s failed:\n%s", spec.job_id, traceback.format_exc()
        )
        send(connection, {"type": "error", "message": describe_error(exc), "usage": _usage()})
    finally:
        connection.close()


def run_explain(spec: ExplainSpec, connection: Connection) -> None:
    """Runs one explanation (explain.compute) and reports through `connection`; never raises.

    Last message: {"type": "done", "result": {...}, "usage": {...}}, or {"type": "error",
    "message": ..., "status": <gRPC status name of a ParadigmError, else "">, "usage": ...}.
    """
    _die_with_parent()
    for variable in _THREAD_VARIABLES:
        os.environ[variable] = str(spec.blas_threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=spec.blas_threads):
            from service.training import explain

            result = explain.compute(spec)
        send(connection, {"type": "done", "result": result, "usage": _usage()})
    except BaseException as exc:
        from service.errors import ParadigmError

        status = exc.status.name if isinstance(exc, ParadigmError) else ""
        if not status:
            log = logging.getLogger("paradigm.worker")
            log.error("explain failed:\n%s", traceback.format_exc())
        message = {"type": "error", "message": describe_error(exc), "status": status}
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
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)  # the server died before the line above took effect


def _usage() -> dict[str, float]:
    """CPU-seconds this worker (and anything it started) consumed: the job's CPU cost."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_seconds": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime}


def describe_error(exc: BaseException) -> str:
    """A failure in the words a job reports: a ParadigmError's message, else its text."""
    from service.errors import ParadigmError

    if isinstance(exc, ParadigmError):  # already written for the caller
        return exc.message
    if isinstance(exc, OSError):
        from service.errors import storage_error

        error = storage_error(exc, "the worker could not write the model")
        if error is not None:
            return error.message
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, ValueError | TypeError | KeyError | RuntimeError):
        return text
    return f"{type(exc).__name__}: {text}"


# -- the parent's side of the pipe ----------------------------------------------------------


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

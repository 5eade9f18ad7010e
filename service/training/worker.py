"""Entry point of a training/import worker process (spawn start method).

Imports only the standard library at module level: the heavy libraries (scikit-learn,
torch, skl2onnx) are imported inside the child, never in the serving process. Messages to
the parent are plain dicts over a one-way pipe:
  {"type": "event", "stage": ..., "message": ..., "progress": ..., "epoch": ..., ...}
  {"type": "done", "manifest": {...}}      last message on success
  {"type": "error", "message": "..."}      last message on failure
"""

from __future__ import annotations

import logging
import os
import resource
import traceback
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any

from service.training.spec import ImportSpec, TrainingSpec

_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def run(spec: TrainingSpec | ImportSpec, connection: Connection) -> None:
    """Runs one job and reports through `connection`; never raises."""
    for variable in _THREAD_VARIABLES:
        os.environ[variable] = str(spec.blas_threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")

    def emit(stage: str, message: str = "", **details: Any) -> None:
        connection.send({"type": "event", "stage": stage, "message": message, **details})

    try:
        # threadpoolctl also reins in BLAS pools that numpy started before the variables
        # above were set (the spawned child re-imports the parent's modules first).
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=spec.blas_threads):
            from service.training import pipeline

            if isinstance(spec, TrainingSpec):
                manifest = pipeline.run_training(spec, emit)
            else:
                manifest = pipeline.run_import(spec, emit)
        connection.send({"type": "done", "manifest": asdict(manifest), "usage": _usage()})
    except BaseException as exc:
        logging.getLogger("paradigm.worker").error(
            "job %s failed:\n%s", spec.job_id, traceback.format_exc()
        )
        connection.send({"type": "error", "message": _describe(exc), "usage": _usage()})
    finally:
        connection.close()


def _usage() -> dict[str, float]:
    """CPU-seconds this worker (and anything it started) consumed: the job's CPU cost."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_seconds": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime}


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, ValueError | TypeError | KeyError | RuntimeError):
        return text
    return f"{type(exc).__name__}: {text}"

"""A cascade's calibration rows, fetched from a worker (service/worker/calibration.py).

The serving process cannot read a table (pyarrow) or redo the training split (scikit-learn),
so a spawned worker writes the held-out rows to an .npz of plain arrays, which this side
reads with numpy alone (never unpickling) and deletes.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service import launcher
from service.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ParadigmError,
    Unavailable,
)
from service.launcher import WorkerProcess
from service.training.spec import CalibrationRowsSpec

LABELS = "__labels__"
_ERRORS: dict[str, type[ParadigmError]] = {
    cls.status.name: cls
    for cls in (InvalidArgument, NotFound, FailedPrecondition, DeadlineExceeded, Unavailable)
}


@dataclass(frozen=True)
class CalibrationRows:
    """Inputs by name (text columns as str objects, as the data plane takes BYTES) and the
    true class of each row, as text (the models' class_names)."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    cpu_seconds: float

    def __len__(self) -> int:
        return len(self.labels)


async def held_out_rows(
    dataset_dir: Path,
    *,
    split_seed: int,
    test_fraction: float,
    inputs: list[str],
    max_rows: int,
    timeout: float,
    blas_threads: int = 1,
) -> CalibrationRows:
    """The dataset's held-out rows for models split with this seed and fraction."""
    with tempfile.TemporaryDirectory(prefix="paradigm-calibration-") as scratch:
        out_path = Path(scratch) / "rows.npz"
        spec = CalibrationRowsSpec(
            dataset_dir=str(dataset_dir),
            split_seed=split_seed,
            test_fraction=test_fraction,
            inputs=inputs,
            out_path=str(out_path),
            max_rows=max_rows,
            blas_threads=blas_threads,
        )
        worker = WorkerProcess(
            launcher.RUN_CALIBRATION_ROWS,
            spec,
            name="paradigm-calibration",
            who="the calibration worker",
            grace=0.0,
        )
        started = time.perf_counter()
        ended = await worker.run(timeout=timeout)
        final = ended.final
        if ended.timed_out:
            raise DeadlineExceeded(
                f"reading the calibration rows took more than {time.perf_counter() - started:.0f} s"
            )
        if final is None:
            raise Unavailable(
                f"the calibration worker exited with code {ended.exitcode} before answering"
            )
        if final.get("type") != "done":
            message = str(final.get("message") or "the calibration worker failed")
            error = _ERRORS.get(str(final.get("status") or ""))
            if error is None:
                raise RuntimeError(f"calibration worker failed: {message}")
            raise error(message)
        with np.load(out_path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    labels = arrays.pop(LABELS)
    typed = {
        name: (array.astype(object) if array.dtype.kind == "U" else array)
        for name, array in arrays.items()
    }
    return CalibrationRows(typed, labels, ended.cpu_seconds)

"""Datasets as the serving process sees them: listing, streamed uploads, deletion.

.npz uploads are parsed with numpy only (the serving process never imports scikit-learn);
tables and image archives are parsed in a worker process (worker/datasets/tabular.py,
images.py), as are the built-in datasets (worker/datasets/builtin.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import multiprocessing
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from service import launcher
from service.datasets import layout
from service.datasets.layout import (
    CONTACT_SHEET_FILE,
    INFO_FILE,
    NAME_PATTERN,
    TASKS,
    DatasetInfo,
    infer_task,
    integral_labels,
    read_info,
    write_dataset,
)
from service.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted

log = logging.getLogger(__name__)

GENERATORS = ("digits_scaled", "digits_scaled_images")
MAX_GENERATED_SAMPLES = 200_000
#: An upload's arrays may unpack to at most this many times max_upload_bytes: .npz members
#: can be deflated, and a few KiB of zeros must not make the server allocate terabytes.
UNPACK_RATIO = 16
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Names listed in a NotFound message: enough to spot a typo, not a whole listing.
LISTED_NAMES = 20
# What reading a damaged .npz raises: bad zip structure, CRC or deflate errors, short data.
_UNREADABLE = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


class DatasetStore:
    """Datasets under <root>/<name>/; built-in ones are read-only."""

    def __init__(self, root: Path, max_upload_bytes: int) -> None:
        self.root = root
        self.max_upload_bytes = max_upload_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.glob(".upload-*"):  # spools of uploads a crash cut short
            leftover.unlink(missing_ok=True)

    def list(self) -> list[DatasetInfo]:
        infos = [
            read_info(path.parent)
            for path in self.root.glob(f"*/{INFO_FILE}")
            if NAME_PATTERN.match(path.parent.name)  # skips staging directories
        ]
        return sorted(infos, key=lambda info: (not info.builtin, info.name))

    def path(self, name: str) -> Path:
        directory = self.root / name
        if not NAME_PATTERN.match(name) or not (directory / INFO_FILE).exists():
            names = [info.name for info in self.list()]
            known = ", ".join(names[:LISTED_NAMES]) or "none"
            if len(names) > LISTED_NAMES:
                known += f" and {len(names) - LISTED_NAMES} more (ListDatasets)"
            raise NotFound(f"dataset {name!r} not found; datasets: {known}")
        return directory

    def get(self, name: str) -> DatasetInfo:
        return read_info(self.path(name))

    def contact_sheet(self, name: str) -> bytes:
        """An image dataset's contact sheet PNG; b"" for other datasets."""
        path = self.path(name) / CONTACT_SHEET_FILE
        return path.read_bytes() if path.is_file() else b""

    def delete(self, name: str) -> None:
        info = self.get(name)
        if info.builtin:
            raise InvalidArgument(f"dataset {name!r} is built in and cannot be deleted")
        shutil.rmtree(self.root / name)

    async def receive(self, chunks: AsyncIterator[bytes], spool: Path) -> int:
        return await spool_stream(chunks, spool, self.max_upload_bytes, "upload")

    async def generate(
        self, *, name: str, generator: str, n_samples: int, image_size: int, seed: int
    ) -> DatasetInfo:
        """Generates a scale dataset in a worker process (scipy does the image warps)."""
        self.check_new_name(name)
        if generator not in GENERATORS:
            raise InvalidArgument(f"generator {generator!r} is not one of {list(GENERATORS)}")
        if not 1 <= n_samples <= MAX_GENERATED_SAMPLES:
            raise InvalidArgument(
                f"n_samples {n_samples} must be between 1 and {MAX_GENERATED_SAMPLES}"
            )
        if not 8 <= image_size <= 64:
            raise InvalidArgument(f"image_size {image_size} must be between 8 and 64")
        try:
            info: DatasetInfo = await _in_worker(
                launcher.GENERATE_SCALE,
                self.root,
                name=name,
                generator=generator,
                n_samples=n_samples,
                image_size=image_size,
                seed=seed,
            )
            return info
        except OSError:
            if (self.root / name).exists():  # a concurrent request for the same name won
                raise AlreadyExists(f"dataset {name!r} already exists; delete it first") from None
            raise

    async def ingest_table(
        self,
        spool: Path,
        *,
        name: str,
        file_format: str,
        label_column: str,
        column_kinds: dict[str, str],
        task: str = "",
        description: str = "",
    ) -> DatasetInfo:
        """Parses a spooled CSV or Parquet upload in a worker process (pyarrow: the serving
        process never holds the table) and stores it as a table dataset."""
        self.check_new_name(name)
        await _in_worker(
            launcher.INGEST_TABLE,
            str(spool),
            str(self.root),
            name,
            file_format=file_format,
            label_column=label_column,
            column_kinds=column_kinds,
            task=task,
            description=description,
        )
        info = await asyncio.to_thread(self.get, name)
        log.info(
            "stored table dataset %s: %d rows, %d columns", name, info.n_samples, len(info.columns)
        )
        return info

    async def ingest_images(
        self,
        spool: Path,
        *,
        name: str,
        image_size: int,
        grayscale: bool,
        description: str = "",
    ) -> DatasetInfo:
        """Decodes a spooled image archive in a worker process (Pillow: the serving process
        never decodes an image) and stores it as an image dataset."""
        self.check_new_name(name)
        low, high = layout.IMAGE_SIZES
        if not low <= image_size <= high:
            raise InvalidArgument(f"image_size {image_size} must be between {low} and {high}")
        await _in_worker(
            launcher.INGEST_IMAGES,
            str(spool),
            str(self.root),
            name,
            image_size=image_size,
            grayscale=grayscale,
            max_total_bytes=UNPACK_RATIO * self.max_upload_bytes,
            description=description,
        )
        info = await asyncio.to_thread(self.get, name)
        log.info(
            "stored image dataset %s: %d images of %s, %d classes",
            name,
            info.n_samples,
            info.image_shape,
            info.n_classes,
        )
        return info

    def check_new_name(self, name: str) -> None:
        if not NAME_PATTERN.match(name):
            raise InvalidArgument(
                f"dataset name {name!r} is not valid: use 1-64 lowercase letters, digits, "
                "'.', '_' or '-', starting with a letter or digit"
            )
        if (self.root / name).exists():
            raise AlreadyExists(f"dataset {name!r} already exists; delete it first")

    def new_spool(self) -> Path:
        handle, path = tempfile.mkstemp(prefix=".upload-", dir=self.root)
        os.close(handle)
        return Path(path)

    def store_upload(
        self,
        spool: Path,
        *,
        name: str,
        file_format: str,
        task: str = "",
        description: str = "",
    ) -> DatasetInfo:
        """Parses and checks a spooled .npz upload, then stores it. Blocking: run off the loop."""
        self.check_new_name(name)
        if task and task not in TASKS:
            raise InvalidArgument(f"task {task!r} is not one of {list(TASKS)}")
        if file_format != "npz":
            raise InvalidArgument(f"format {file_format!r} is not npz; tables go to ingest_table")
        X, y, image_shape, feature_names = _parse_npz(spool, UNPACK_RATIO * self.max_upload_bytes)
        if task == "classification" and not integral_labels(y):
            raise InvalidArgument(
                "classification needs whole-number class labels (at most 2**53 in size); "
                f"y has {_first_bad_label(y)}"
            )
        if (task or infer_task(y)) == "classification" and len(np.unique(y)) < 2:
            raise InvalidArgument(
                "classification needs at least two classes, but every label in y is "
                f"{y[0].item()!r}; for data without classes (anomaly detection) upload with task "
                "TASK_ANOMALY_DETECTION"
            )
        try:
            info = write_dataset(
                self.root,
                name,
                X,
                y,
                task=task,
                image_shape=image_shape,
                feature_names=feature_names,
                description=description,
            )
        except OSError:
            if (self.root / name).exists():  # a concurrent upload of the same name won
                raise AlreadyExists(f"dataset {name!r} already exists; delete it first") from None
            raise
        log.info("stored dataset %s: %d x %d", name, info.n_samples, info.n_features)
        return info


async def _in_worker(target: str, *args: Any, **kwargs: Any) -> Any:
    """Runs worker-side `target` ("module:function") in a spawned process and returns its
    result: what a dataset build needs that the serving process must not import."""
    call = functools.partial(launcher.run_by_name, target, *args, **kwargs)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return await asyncio.get_running_loop().run_in_executor(pool, call)


async def spool_stream(chunks: AsyncIterator[bytes], path: Path, max_bytes: int, what: str) -> int:
    """Writes a streamed upload to path, refusing more than max_bytes or nothing at all."""
    size = 0
    with path.open("wb") as handle:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise ResourceExhausted(f"{what} exceeds the limit of {max_bytes} bytes")
            handle.write(chunk)
    if size == 0:
        raise InvalidArgument(f"{what} is empty: send the file in chunks after the header")
    return size


def _check_finite(array: np.ndarray, what: str) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        row = int(np.argwhere(~finite)[0][0])
        beyond = (
            ", or a value beyond float32's range (about ±3.4e38): features are stored as float32"
            if array.dtype == np.float32
            else ""
        )
        raise InvalidArgument(f"{what} has NaN or infinity{beyond} (first at row {row})")


def _first_bad_label(y: np.ndarray) -> str:
    for value in y.reshape(-1):
        if not integral_labels(np.asarray([value])):
            return repr(value.item())
    return "none"


def _shown(text: str, limit: int = 40) -> str:
    """repr(text), cut short: error messages echo what the caller sent, not all of it."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _check_npz_sizes(path: Path, limit: int) -> None:
    """Refuses members that would unpack to more than limit bytes, reading only the .npy
    headers: np.load allocates what a header claims before it reads any data."""
    total = 0
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            total += member.file_size
            if member.filename.endswith(".npy"):
                with archive.open(member) as handle:
                    version = np.lib.format.read_magic(handle)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
                    else:
                        raise InvalidArgument(
                            f".npz member {member.filename!r} is .npy version {version}; "
                            "save with numpy.savez"
                        )
                total += math.prod(shape) * dtype.itemsize
            if total > limit:
                raise InvalidArgument(
                    f"the .npz arrays are too large: {member.filename!r} alone would unpack "
                    f"past the limit of {limit} bytes"
                )


def _parse_npz(path: Path, max_bytes: int) -> tuple[np.ndarray, np.ndarray, list[int], list[str]]:
    try:
        _check_npz_sizes(path, max_bytes)
        archive = np.load(path, allow_pickle=False)
    except _UNREADABLE as exc:
        raise InvalidArgument(f"not a readable .npz file: {exc}") from None
    with archive:
        missing = {"X", "y"} - set(archive.files)
        if missing:
            raise InvalidArgument(
                f".npz must hold arrays 'X' and 'y'; missing {sorted(missing)}, "
                f"found {sorted(archive.files)[:LISTED_NAMES]}"
            )
        try:
            X, y = archive["X"], archive["y"]
        except ValueError as exc:
            # np.load refuses object arrays when allow_pickle=False: that is the point.
            raise InvalidArgument(
                f".npz arrays must be numeric, not pickled objects: {exc}"
            ) from None
        except _UNREADABLE as exc:  # a damaged member: CRC, deflate or short data
            raise InvalidArgument(f"not a readable .npz file: {exc}") from None
    for array, what in ((X, "X"), (y, "y")):
        if not isinstance(array, np.ndarray):  # a member without the .npy format
            raise InvalidArgument(f"{what} in the .npz is not a numpy array; use numpy.savez")
        if array.dtype.kind not in "biuf":
            raise InvalidArgument(
                f"{what} must be numeric (bool, integer or float); it has dtype {array.dtype}"
            )
    if X.ndim not in (2, 3):
        raise InvalidArgument(
            f"X must be 2-D (samples, features) or 3-D (samples, height, width); "
            f"it has shape {list(X.shape)}"
        )
    if len(X) == 0:
        raise InvalidArgument(f"X has no rows (shape {list(X.shape)}); send at least one sample")
    if X.size == 0:
        raise InvalidArgument(f"X has no features (shape {list(X.shape)})")
    if y.ndim != 1 or len(y) != len(X):
        raise InvalidArgument(
            f"y must be 1-D with one label per row of X ({len(X)}); it has shape {list(y.shape)}"
        )
    image_shape = list(X.shape[1:]) if X.ndim == 3 else []
    with np.errstate(over="ignore"):  # beyond float32's range: _check_finite says so
        X = X.reshape(len(X), -1).astype(np.float32)
    y = y.astype(np.int64) if integral_labels(y) else y.astype(np.float64)
    _check_finite(X, "X")
    _check_finite(y, "y")
    return X, y, image_shape, []

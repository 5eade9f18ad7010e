"""How a dataset lies on disk: <root>/<name>/dataset.json beside its data, either
data.npz (arrays X, y: built-in, generated and .npz uploads), data.parquet (a table: CSV
and Parquet uploads, each column with a kind, missing values kept; service/datasets/schema.py)
or, for image uploads, data.npz with X uint8 [n, height, width, channels] and y the class
indices, beside contact_sheet.png.

numpy and the standard library only, so both the serving process (uploads, listing) and the
training workers (loading) use it. Arrays are stored without pickling and loaded with
allow_pickle=False; tables are read with pyarrow, in workers only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

DATA_FILE = "data.npz"
TABLE_FILE = "data.parquet"
CONTACT_SHEET_FILE = "contact_sheet.png"
INFO_FILE = "dataset.json"
# \Z, not $: "$" also matches before a final newline, and "iris\n" is no dataset name.
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
#: Labels beyond this are not class labels: float64 holds integers exactly only up to here.
MAX_CLASS_LABEL = 2**53
TASKS = ("classification", "regression", "anomaly_detection")
#: Image uploads: the sides images may be resized to, and the one used unless one is given.
IMAGE_SIZES = (8, 128)
DEFAULT_IMAGE_SIZE = 32


@dataclass
class DatasetInfo:
    """What is known of a stored dataset.

    Arrays: X is float32 (n_samples, n_features). Tables: n_features counts the columns a
    model takes (`columns` has them all, with kinds; schema.ColumnInfo as dicts). Images: X
    is uint8 (n_samples, *image_shape) with image_shape [height, width, channels], y the
    index of each row's class in `classes`.
    """

    name: str
    task: str
    n_samples: int
    n_features: int
    n_classes: int = 0
    image_shape: list[int] = field(default_factory=list)
    feature_names: list[str] = field(default_factory=list)
    fingerprint: str = ""
    size_bytes: int = 0
    builtin: bool = False
    description: str = ""
    created_at: str = ""
    #: "arrays" (DATA_FILE), "table" (TABLE_FILE) or "images" (DATA_FILE, uint8 pixels).
    storage: str = "arrays"
    columns: list[dict[str, Any]] = field(default_factory=list)
    label_column: str = ""
    #: Classification: [{"value": class name, "count": rows}] in the models' class order.
    classes: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def is_table(self) -> bool:
        return self.storage == "table"

    @property
    def is_images(self) -> bool:
        return self.storage == "images"


def fingerprint(X: np.ndarray, y: np.ndarray) -> str:
    """sha256 over dtypes, shapes and bytes of X and y: same data, same fingerprint."""
    digest = hashlib.sha256()
    for array in (X, y):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        # A view of the bytes, not a copy: generated datasets reach 600 MB.
        digest.update(np.ascontiguousarray(array).data.cast("B"))
    return digest.hexdigest()


def integral_labels(y: np.ndarray) -> bool:
    """Whether every label is a whole number that int64 and float64 both hold exactly."""
    if not y.size or not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        return False
    exact = np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_
    if not exact and not (np.all(np.isfinite(y)) and np.all(np.equal(np.mod(y, 1), 0))):
        return False
    return bool(np.all(y >= -MAX_CLASS_LABEL) and np.all(y <= MAX_CLASS_LABEL))


def infer_task(y: np.ndarray, max_classes: int = 100) -> str:
    """Integer-valued labels with few distinct values mean classification."""
    if integral_labels(y) and len(np.unique(y)) <= max_classes:
        return "classification"
    return "regression"


def write_dataset(
    root: Path,
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    *,
    task: str = "",
    image_shape: list[int] | None = None,
    feature_names: list[str] | None = None,
    builtin: bool = False,
    description: str = "",
) -> DatasetInfo:
    """Stores X, y under root/name atomically (temporary directory, then rename)."""
    X = np.ascontiguousarray(X, dtype=np.float32).reshape(len(X), -1)
    y = np.ascontiguousarray(y).reshape(-1)
    y = y.astype(np.int64) if np.issubdtype(y.dtype, np.integer) else y.astype(np.float64)
    task = task or infer_task(y)
    n_classes = len(np.unique(y)) if task == "classification" else 0
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        np.savez(staging / DATA_FILE, X=X, y=y)
        info = DatasetInfo(
            name=name,
            task=task,
            n_samples=int(X.shape[0]),
            n_features=int(X.shape[1]),
            n_classes=n_classes,
            image_shape=list(image_shape or []),
            feature_names=list(feature_names or []),
            fingerprint=fingerprint(X, y),
            size_bytes=(staging / DATA_FILE).stat().st_size,
            builtin=builtin,
            description=description,
            created_at=datetime.now(UTC).isoformat(),
        )
        (staging / INFO_FILE).write_text(json.dumps(asdict(info), indent=2))
        os.replace(staging, root / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info


def write_images(
    root: Path,
    name: str,
    images: np.ndarray,
    y: np.ndarray,
    *,
    class_names: list[str],
    contact_sheet: bytes,
    description: str = "",
    warnings: list[str] | None = None,
    builtin: bool = False,
) -> DatasetInfo:
    """Stores decoded images (uint8 [n, height, width, channels]) and their class indices
    under root/name atomically, with the contact sheet beside them."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    y = np.ascontiguousarray(y, dtype=np.int64).reshape(-1)
    counts = np.bincount(y, minlength=len(class_names))
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        np.savez(staging / DATA_FILE, X=images, y=y)
        (staging / CONTACT_SHEET_FILE).write_bytes(contact_sheet)
        info = DatasetInfo(
            name=name,
            task="classification",
            n_samples=int(images.shape[0]),
            n_features=int(np.prod(images.shape[1:])),
            n_classes=len(class_names),
            image_shape=[int(n) for n in images.shape[1:]],
            fingerprint=fingerprint(images, y),
            size_bytes=(staging / DATA_FILE).stat().st_size,
            builtin=builtin,
            description=description,
            created_at=datetime.now(UTC).isoformat(),
            storage="images",
            classes=[
                {"value": c, "count": int(n)} for c, n in zip(class_names, counts, strict=True)
            ],
            warnings=list(warnings or []),
        )
        (staging / INFO_FILE).write_text(json.dumps(asdict(info), indent=2))
        os.replace(staging, root / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info


def file_fingerprint(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_info(directory: Path) -> DatasetInfo:
    return DatasetInfo(**json.loads((directory / INFO_FILE).read_text()))


def load_arrays(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """Returns X (float32, 2-D; uint8 images for an image upload) and y (int64 or float64)
    without unpickling anything."""
    with np.load(directory / DATA_FILE, allow_pickle=False) as data:
        return data["X"], data["y"]


# The datasets scikit-learn ships that every server offers; written by datasets/builtin.py
# in a worker process, since the serving process does not import scikit-learn.
BUILTIN_DATASETS = (
    "digits", "iris", "wine", "breast_cancer", "diabetes", "penguins", "digits_images",
)  # fmt: skip

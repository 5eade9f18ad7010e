"""The small datasets scikit-learn ships, and the Palmer penguins table that the
palmerpenguins wheel ships, written into the dataset store on first start.

They come from the wheels themselves, so this works without network access. Runs in a
worker process at start-up, never on the serving path.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.datasets import layout
from service.errors import AlreadyExists

#: The names, kept in layout so that the serving process knows them without this module.
BUILTIN = layout.BUILTIN_DATASETS
PENGUINS = "penguins"
DIGITS_IMAGES = "digits_images"
PENGUINS_DESCRIPTION = (
    "Palmer penguins (Gorman, Williams and Fraser, 2014): species of 344 penguins from "
    "island, bill, flipper, body mass, sex and year; words and missing values included."
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Source:
    loader: str
    task: str
    description: str
    image_shape: tuple[int, ...] = ()


_SOURCES = {
    "digits": _Source(
        "load_digits",
        "classification",
        "8x8 grayscale images of handwritten digits 0-9, pixel values 0-16 (UCI).",
        (8, 8),
    ),
    "iris": _Source(
        "load_iris",
        "classification",
        "Fisher's iris flowers: 4 sepal and petal measurements, 3 species.",
    ),
    "wine": _Source(
        "load_wine",
        "classification",
        "13 chemical measurements of wines from 3 Italian cultivars (UCI).",
    ),
    "breast_cancer": _Source(
        "load_breast_cancer",
        "classification",
        "30 features of breast mass cell nuclei, malignant (0) or benign (1) (Wisconsin).",
    ),
    "diabetes": _Source(
        "load_diabetes",
        "regression",
        "10 standardized baseline measurements of diabetes patients; target: disease "
        "progression one year later.",
    ),
}


def materialize_builtin(root: Path) -> list[layout.DatasetInfo]:
    """Writes each builtin dataset not yet under root; returns the info of all of them.

    Idempotent: a dataset already present is read, not rewritten, so its created_at and
    fingerprint stay stable across restarts.
    """
    import sklearn.datasets

    infos = []
    for name in BUILTIN:
        directory = root / name
        if (directory / layout.INFO_FILE).exists():
            infos.append(layout.read_info(directory))
            continue
        if name == PENGUINS:
            infos.extend(_penguins(root))
            continue
        if name == DIGITS_IMAGES:
            infos.append(_digits_images(root))
            continue
        source = _SOURCES[name]
        loader: Callable[..., Any] = getattr(sklearn.datasets, source.loader)
        bunch = loader()
        try:
            info = layout.write_dataset(
                root,
                name,
                bunch.data,
                bunch.target,
                task=source.task,
                image_shape=list(source.image_shape) or None,
                feature_names=[str(f) for f in bunch.feature_names],
                builtin=True,
                description=source.description,
            )
        except OSError:
            # Another process (a second server on the same root) renamed it into place first.
            if not (directory / layout.INFO_FILE).exists():
                raise
            info = layout.read_info(directory)
        infos.append(info)
    return infos


def penguins_csv() -> Path | None:
    """The CSV inside the palmerpenguins wheel, found without importing it (it needs pandas)."""
    spec = importlib.util.find_spec("palmerpenguins")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "penguins.csv"
    return path if path.is_file() else None


def _penguins(root: Path) -> list[layout.DatasetInfo]:
    from service.worker.datasets import tabular

    source = penguins_csv()
    if source is None:
        log.warning("palmerpenguins is not installed: no built-in penguins dataset")
        return []
    # Another server on the same root may have written it first.
    with contextlib.suppress(AlreadyExists):
        tabular.ingest(
            str(source),
            str(root),
            PENGUINS,
            file_format="csv",
            label_column="species",
            description=PENGUINS_DESCRIPTION,
            builtin=True,
        )
    return [layout.read_info(root / PENGUINS)]


def _digits_images(root: Path) -> layout.DatasetInfo:
    """digits as what a folder of scans would be: uint8 8x8 grey images with class names,
    so image models (raw pixels in, scaling inside the graph) have a built-in to learn."""
    from sklearn.datasets import load_digits

    from service.worker.datasets.images import contact_sheet

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)[..., np.newaxis]
    names = [str(c) for c in range(10)]
    with contextlib.suppress(OSError):  # another server on the same root wrote it first
        return layout.write_images(
            root,
            DIGITS_IMAGES,
            images,
            digits.target,
            class_names=names,
            contact_sheet=contact_sheet(images, digits.target, names),
            description="digits as 8x8 grey images (uint8, 0-255) of the classes 0-9 (UCI).",
            builtin=True,
        )
    return layout.read_info(root / DIGITS_IMAGES)

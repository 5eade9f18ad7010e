"""The small datasets scikit-learn ships, written into the dataset store on first start.

They come from the scikit-learn wheel itself, so this works without network access. Imports
scikit-learn lazily: call it from a worker or at start-up, not on the serving path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.datasets import layout

#: The names, kept in layout so that the serving process knows them without this module.
BUILTIN = layout.BUILTIN_DATASETS


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

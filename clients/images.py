"""Image files for image models: found, decoded and resized on the client, as the server
did with the training archive (service/worker/image_files.py), so the model is sent the
UINT8 pixels [n, height, width, channels] its input asks for and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Upload suffixes that mean an image archive (DATASET_FORMAT_IMAGES).
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def image_input(inputs: Sequence[Any]) -> tuple[int, int, int] | None:
    """(height, width, channels) when a model takes one UINT8 [n, H, W, C] image input."""
    if len(inputs) != 1:
        return None
    spec = inputs[0]
    shape = list(spec.shape)
    if spec.datatype != "UINT8" or len(shape) != 4 or min(shape[1:]) <= 0:
        return None
    return int(shape[1]), int(shape[2]), int(shape[3])


def image_files(paths: Iterable[str | Path]) -> list[Path]:
    """The image files among `paths`, a folder standing for the images inside it (sorted,
    subfolders too); ValueError for a path that does not exist or a folder without any."""
    from service.worker.image_files import is_image_name

    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and is_image_name(p.name))
            if not inside:
                raise ValueError(f"{path}: no PNG, JPEG, BMP or GIF images in this folder")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise ValueError(f"{path}: no such file or folder")
    return found


def load_images(files: Sequence[Path], shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 [len(files), H, W, C]: each file decoded and resized as training did;
    ValueError naming a file that is not a readable image."""
    from service.worker.image_files import ImageTooLarge, NotAnImage, decode

    height, width, channels = shape
    if height != width or channels not in (1, 3):
        raise ValueError(f"the model takes {list(shape)} images; expected square, 1 or 3 channels")
    pixels = []
    for path in files:
        try:
            pixels.append(decode(path.read_bytes(), height, grayscale=channels == 1))
        except (NotAnImage, ImageTooLarge) as exc:
            raise ValueError(f"{path}: {exc}") from None
    return np.stack(pixels) if pixels else np.zeros((0, *shape), np.uint8)

"""Image files to pixels: the one decode-and-resize that image ingestion (a worker process)
and `paradigm predict` (the client) both use, so a served model sees a picture prepared
exactly as its training pictures were.

Pillow and numpy only. The serving process never imports it (import-linter forbids PIL
there): it neither decodes uploads nor requests.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

#: The file suffixes read as images; the formats Pillow must then find in them.
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
FORMATS = frozenset({"PNG", "JPEG", "BMP", "GIF"})
#: Most pixels one image may have (a 40-megapixel photo): a small file can claim a huge
#: canvas (a "pixel bomb"), and decoding it would take 4 bytes a pixel before any resize.
MAX_PIXELS = 40_000_000


class ImageTooLarge(ValueError):
    """The image's canvas is beyond MAX_PIXELS."""


class NotAnImage(ValueError):
    """The bytes are not a PNG, JPEG, BMP or GIF that Pillow can decode."""


def is_image_name(name: str) -> bool:
    return name.lower().endswith(SUFFIXES)


def decode(data: bytes, size: int, *, grayscale: bool, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The picture in `data` as uint8 [size, size, channels] (1 channel grey, else 3 RGB).

    The first frame of an animation; transparent parts over white; the whole picture
    resized (not cropped) with bilinear filtering, which averages when it shrinks.
    Raises NotAnImage or ImageTooLarge.
    """
    try:
        picture = Image.open(io.BytesIO(data))  # reads the header only
    except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError...
        raise NotAnImage(f"not a PNG, JPEG, BMP or GIF image ({type(exc).__name__})") from None
    with picture:
        if picture.format not in FORMATS:
            raise NotAnImage(f"a {picture.format} image; PNG, JPEG, BMP and GIF are read")
        width, height = picture.size
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"{width}x{height} pixels, more than the {max_pixels} an image may have"
            )
        try:
            picture.seek(0)
            pixels = _resized(_flattened(picture), size, grayscale)
        except Exception as exc:  # truncated or corrupt data shows only when decoding
            raise NotAnImage(f"cannot be decoded: {type(exc).__name__}: {exc}") from None
    array = np.asarray(pixels, dtype=np.uint8)
    return array[:, :, None] if grayscale else array


def _flattened(picture: Image.Image) -> Image.Image:
    """The picture without transparency: transparent parts become white, as they look."""
    if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
        rgba = picture.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return picture


def _resized(picture: Image.Image, size: int, grayscale: bool) -> Image.Image:
    converted = picture.convert("L" if grayscale else "RGB")
    return converted.resize((size, size), Image.Resampling.BILINEAR)

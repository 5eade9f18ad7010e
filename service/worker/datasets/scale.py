"""Scale datasets for benchmarks: as many image rows as asked for, grown from a small set.

`digits_scaled` turns scikit-learn's 1 797 digits (8x8, values 0..16) into n larger images
(image_size x image_size, values 0..1): each row takes a source digit, up-samples it to a
random 60-90 % of the canvas side, rotates it by up to 15 degrees, puts it at a random place
inside the canvas and adds Gaussian noise. Classes stay balanced and the same seed gives the
same arrays, so a benchmark can be repeated on another machine without shipping the data.

Runs in a worker process (DatasetStore.generate): it imports scikit-learn and scipy, which
the serving process never does.

Speed: zoom, rotation and shift are one affine map, so each row is a single bilinear
resampling (no double blur from zooming then rotating) and scipy does it for a whole chunk
of rows in one call. Warping alone, for 200 000 rows at 28x28 on 2 cores (extrapolated from
2 000 and 20 000 rows): `ndimage.zoom` + `ndimage.rotate` per row ~18 s, one 2-D
`map_coordinates` per row ~15 s, a 3-D `map_coordinates` over a stacked chunk ~11 s, and the
2-D atlas used here ~5 s. The whole of generate() for 200 000 rows takes ~11 s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.datasets.layout import DatasetInfo, write_dataset

DIGIT_SIDE = 8
DIGIT_MAX = 16.0
SCALE_RANGE = (0.6, 0.9)  # side of the digit as a fraction of the canvas side
MAX_ROTATION_DEGREES = 15.0
NOISE_STD = 0.05  # in the 0..1 value range
# Rows warped per scipy call: bounds the coordinate arrays (2 x 2048 x 784 float64, 26 MB)
# whatever n is. Fixed, because the noise is drawn per chunk: another size, other data.
CHUNK_ROWS = 2048
# Zero rows and columns around each digit in the atlas, wide enough for bilinear reads.
PAD = 1


def generate(
    root: Path, *, name: str, generator: str, n_samples: int, image_size: int, seed: int
) -> DatasetInfo:
    """Generates `generator`'s data and stores it as root/name; returns what was stored."""
    if generator not in ("digits_scaled", "digits_scaled_images"):
        raise ValueError(f"generator {generator!r} is not one of ['digits_scaled', ...]")
    X, y = digits_scaled(n_samples, image_size, seed)
    if generator == "digits_scaled_images":
        return _as_images(root, name, X, y, image_size, seed)
    return write_dataset(
        root,
        name,
        X,
        y,
        task="classification",
        image_shape=[image_size, image_size],
        # Listed like the built-in ones, but deletable: a 600 MB generated set must not
        # be stuck on disk.
        builtin=False,
        description=(
            f"digits up-sampled to {image_size}x{image_size} with random shifts, rotations "
            f"and noise (seed {seed})"
        ),
    )


def _as_images(
    root: Path, name: str, X: np.ndarray, y: np.ndarray, image_size: int, seed: int
) -> DatasetInfo:
    """The same digits as an image dataset: uint8 grey pixels with class names, served raw
    (what a folder of scans would upload as)."""
    from service.datasets.layout import write_images
    from service.worker.datasets.images import contact_sheet

    images = np.rint(np.clip(X, 0.0, 1.0) * 255).astype(np.uint8)
    images = images.reshape(len(images), image_size, image_size, 1)
    names = [str(c) for c in range(10)]
    return write_images(
        root,
        name,
        images,
        y,
        class_names=names,
        contact_sheet=contact_sheet(images, y, names),
        description=(
            f"digits up-sampled to {image_size}x{image_size} grey images (uint8) with random "
            f"shifts, rotations and noise (seed {seed})"
        ),
    )


def digits_scaled(n_samples: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """X float32 (n_samples, image_size**2) in 0..1 and y int64 (n_samples,) in 0..9."""
    # Only here: the serving process imports this module (DatasetStore hands generate to
    # its worker by reference) and must not load scikit-learn or scipy.
    from scipy import ndimage
    from sklearn.datasets import load_digits

    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    if image_size < DIGIT_SIDE:
        raise ValueError(f"image_size must be at least {DIGIT_SIDE}, got {image_size}")
    digits = load_digits()
    images = (digits.images / DIGIT_MAX).astype(np.float32)
    targets = digits.target.astype(np.int64)
    # The request's seed is an int64; SeedSequence refuses negatives, so wrap them to uint64
    # (a one-to-one map: every seed still gives its own data).
    rng = np.random.default_rng(seed % 2**64)

    sources = _balanced_sources(targets, n_samples, rng)
    side = rng.uniform(*SCALE_RANGE, n_samples) * image_size
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES, n_samples))
    # Centres that keep the unrotated digit box on the canvas (pixel centres are at 0..N-1,
    # so the canvas spans -0.5..N-0.5). Rotated corners may leave it; digits rarely reach
    # their corners, so little ink is lost.
    low, high = side / 2 - 0.5, image_size - 0.5 - side / 2
    centre_row = low + rng.random(n_samples) * (high - low)
    centre_col = low + rng.random(n_samples) * (high - low)

    atlas = _atlas(images)
    # Preallocated once (627 MB at 200 000 x 28 x 28) and filled chunk by chunk, in place.
    X = np.empty((n_samples, image_size, image_size), dtype=np.float32)
    for start in range(0, n_samples, CHUNK_ROWS):
        rows = slice(start, min(start + CHUNK_ROWS, n_samples))
        out = X[rows]  # a view: scipy and the noise write straight into X
        # order=1 is bilinear; it needs no spline prefilter. All coordinates lie inside the
        # atlas, so the mode only decides the exact edge, which is zero padding anyway.
        ndimage.map_coordinates(
            atlas,
            _atlas_coordinates(
                sources[rows],
                side[rows],
                angle[rows],
                centre_row[rows],
                centre_col[rows],
                image_size,
            ),
            output=out,
            order=1,
            mode="nearest",
            prefilter=False,
        )
        out += NOISE_STD * rng.standard_normal(out.shape, dtype=np.float32)
        np.clip(out, 0.0, 1.0, out=out)
    return X.reshape(n_samples, -1), targets[sources]


def _balanced_sources(targets: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n source indices whose classes differ in count by at most one, in random order.

    Each class cycles through its own members, reshuffled every cycle, so every source
    image is used before any is used twice.
    """
    classes = np.unique(targets)
    row_class = classes[rng.permutation(n) % len(classes)]
    sources = np.empty(n, dtype=np.int64)
    for label in classes:
        rows = np.flatnonzero(row_class == label)
        members = np.flatnonzero(targets == label)
        cycles = max(1, -(-len(rows) // len(members)))  # at least one: n may be < classes
        picks = np.concatenate([rng.permutation(members) for _ in range(cycles)])
        sources[rows] = picks[: len(rows)]
    return sources


def _atlas(images: np.ndarray) -> np.ndarray:
    """The digits stacked into one tall 2-D image, each framed by PAD zero pixels.

    One 2-D image lets one bilinear `map_coordinates` call serve a whole chunk of rows,
    each reading its own digit (a 3-D stack would interpolate over 8 neighbours, not 4).
    """
    count, height, width = images.shape
    framed = np.zeros((count, height + 2 * PAD, width + 2 * PAD), dtype=np.float32)
    framed[:, PAD : PAD + height, PAD : PAD + width] = images
    return framed.reshape(count * (height + 2 * PAD), width + 2 * PAD)


def _atlas_coordinates(
    sources: np.ndarray,
    side: np.ndarray,
    angle: np.ndarray,
    centre_row: np.ndarray,
    centre_col: np.ndarray,
    image_size: int,
) -> np.ndarray:
    """For each output pixel of each row, where to read in the atlas: (2, k, N, N) float64.

    The inverse of "scale to `side` pixels, rotate by `angle`, centre at (row, col)": an
    output pixel goes back to the digit's own frame, where pixel centres are 0..7.
    """
    grid = np.arange(image_size, dtype=np.float64)
    zoom = (side / DIGIT_SIDE)[:, None, None]
    down = (grid[None, :, None] - centre_row[:, None, None]) / zoom
    across = (grid[None, None, :] - centre_col[:, None, None]) / zoom
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    middle = (DIGIT_SIDE - 1) / 2
    row = middle + cos * down - sin * across
    col = middle + sin * down + cos * across
    # Past one pixel outside the digit, bilinear reads see only zeros: clamping there reads
    # the zero frame and never a neighbouring digit of the atlas.
    np.clip(row, -PAD, DIGIT_SIDE - 1 + PAD, out=row)
    np.clip(col, -PAD, DIGIT_SIDE - 1 + PAD, out=col)
    row += (sources * (DIGIT_SIDE + 2 * PAD) + PAD)[:, None, None]
    col += PAD
    return np.stack([row, col])

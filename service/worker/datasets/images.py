"""Image archives (.zip, .tar, .tar.gz) into stored image datasets: runs in a worker process.

The archive's folders are the classes (one wrapping folder around them, as zipping a
directory makes, is fine). Every image is read from the archive in memory and decoded with
Pillow (service/worker/image_files.py): nothing is extracted, so no member path, however
made, can write a file anywhere. Limits keep a small upload from making the worker
allocate without bound: bytes a member may unpack to, bytes all members may unpack to (a
decompression bomb), pixels one image may have, images and stored bytes per dataset. The
images are stored uint8 [n, size, size, channels] with their class names and a contact
sheet (a PNG grid of samples per class), in the usual staging directory renamed into place.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageDraw

from service.datasets import layout
from service.errors import InvalidArgument, ResourceExhausted
from service.worker import image_files

#: Bytes one archive member may unpack to.
MAX_MEMBER_BYTES = 64 * 1024 * 1024
MAX_IMAGES = 200_000
#: Bytes the decoded images may take as stored (uint8 pixels).
MAX_STORED_BYTES = 2 * 1024 * 1024 * 1024
#: Contact sheet: samples per class, classes shown, and the smallest cell side in pixels.
SHEET_SAMPLES = 8
SHEET_CLASSES = 20
SHEET_CELL = 64
SHEET_LABEL_WIDTH = 140
#: Light grey, so that pictures on white still show where each one ends.
SHEET_BACKGROUND = (224, 224, 224)
LISTED = 5
# What reading a damaged archive raises: bad structure, CRC or deflate errors, short data.
_UNREADABLE = (OSError, EOFError, zipfile.BadZipFile, zlib.error, tarfile.TarError, RuntimeError)


@dataclass
class Member:
    """An archive member that may be an image: its path and its bytes (read lazily)."""

    path: PurePosixPath
    name: str
    size: int


class Archive:
    """A .zip or .tar(.gz/.bz2/.xz) read member by member, within the unpack limits."""

    def __init__(self, path: Path, max_total_bytes: int) -> None:
        self.path = path
        self.max_total_bytes = max_total_bytes
        self.unpacked = 0
        self.skipped: list[str] = []
        if zipfile.is_zipfile(path):
            self.kind = "zip"
        elif _is_tar(path):
            self.kind = "tar"
        else:
            raise InvalidArgument(
                "the upload is not a .zip, .tar or .tar.gz archive: image datasets are an "
                "archive of class folders"
            )

    def images(self) -> Iterator[tuple[Member, bytes]]:
        """Each image member and its bytes, in archive order; other files are skipped."""
        try:
            yield from self._zip() if self.kind == "zip" else self._tar()
        except _UNREADABLE as exc:
            raise InvalidArgument(
                f"the {self.kind} archive is damaged: {type(exc).__name__}: {exc}"
            ) from None

    def _zip(self) -> Iterator[tuple[Member, bytes]]:
        with zipfile.ZipFile(self.path) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                member = self._member(info.filename, info.file_size)
                if member is None:
                    continue
                with archive.open(info) as handle:
                    # The header's size may lie: never read past what was counted.
                    data = handle.read(member.size + 1)
                if len(data) > member.size:
                    raise InvalidArgument(
                        f"{member.name!r} unpacks to more than its header says: refused"
                    )
                yield member, data

    def _tar(self) -> Iterator[tuple[Member, bytes]]:
        with tarfile.open(self.path, "r:*") as archive:
            for info in archive:
                if info.isdir():
                    continue
                if not info.isfile():
                    raise InvalidArgument(
                        f"{info.name!r} is a link or a special file: the archive must hold "
                        "the images themselves"
                    )
                member = self._member(info.name, info.size)
                if member is None:
                    continue
                handle = archive.extractfile(info)
                if handle is None:  # pragma: no cover - regular files always have data
                    continue
                yield member, handle.read(member.size)

    def _member(self, name: str, size: int) -> Member | None:
        """The member if it is an image to read, None to skip it; refuses unsafe paths and
        sizes past the limits before anything is unpacked."""
        path = _safe_path(name)
        if any(part.startswith(".") or part == "__MACOSX" for part in path.parts):
            return None  # .DS_Store, macOS resource forks: not the user's images
        if not image_files.is_image_name(path.name):
            self.skipped.append(name)
            return None
        if size > MAX_MEMBER_BYTES:
            raise ResourceExhausted(
                f"{name!r} unpacks to {size} bytes, more than the {MAX_MEMBER_BYTES} an image "
                "file may have"
            )
        self.unpacked += size
        if self.unpacked > self.max_total_bytes:
            raise ResourceExhausted(
                f"the archive unpacks to more than {self.max_total_bytes} bytes (reached at "
                f"{name!r}): a decompression bomb, or upload fewer or smaller images"
            )
        return Member(path, name, size)


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except _UNREADABLE:
        return False


def _safe_path(name: str) -> PurePosixPath:
    """The member's path, refused when it is absolute or climbs out with '..'."""
    text = name.replace("\\", "/")
    path = PurePosixPath(text)
    drive = len(text) > 1 and text[1] == ":"
    if path.is_absolute() or drive or ".." in path.parts:
        raise InvalidArgument(
            f"archive member {name!r} has an absolute path or '..': member paths must stay "
            "inside the archive"
        )
    return path


def ingest(
    spool: str,
    root: str,
    name: str,
    *,
    image_size: int,
    grayscale: bool,
    max_total_bytes: int,
    description: str = "",
) -> None:
    """Decodes the spooled archive and stores it as root/name; InvalidArgument or
    ResourceExhausted, naming the member, on bad input."""
    low, high = layout.IMAGE_SIZES
    if not low <= image_size <= high:
        raise InvalidArgument(f"image_size {image_size} must be between {low} and {high}")
    archive = Archive(Path(spool), max_total_bytes)
    channels = 1 if grayscale else 3
    per_image = image_size * image_size * channels
    decoded: list[tuple[PurePosixPath, np.ndarray]] = []
    for member, data in archive.images():
        if len(decoded) >= MAX_IMAGES or (len(decoded) + 1) * per_image > MAX_STORED_BYTES:
            raise ResourceExhausted(
                f"more images than a dataset may hold ({len(decoded)} decoded when "
                f"{member.name!r} came; at most {MAX_IMAGES} and {MAX_STORED_BYTES} bytes "
                "of pixels)"
            )
        try:
            pixels = image_files.decode(data, image_size, grayscale=grayscale)
        except image_files.ImageTooLarge as exc:
            raise ResourceExhausted(f"image {member.name!r} is too large: {exc}") from None
        except image_files.NotAnImage as exc:
            raise InvalidArgument(f"image {member.name!r} is {exc}") from None
        decoded.append((member.path, pixels))
    if not decoded:
        seen = f" (it holds {_listed(archive.skipped)})" if archive.skipped else ""
        raise InvalidArgument(
            f"the archive holds no PNG, JPEG, BMP or GIF images{seen}: put the images in "
            "one folder per class"
        )
    labels = _class_folders([path for path, _ in decoded])
    class_names = sorted(set(labels))
    if len(class_names) < 2:
        raise InvalidArgument(
            f"the archive has one class folder ({class_names[0]!r}); a classifier needs at "
            "least two: one folder per class, each holding its images"
        )
    order = sorted(range(len(decoded)), key=lambda i: (labels[i], str(decoded[i][0])))
    index = {c: i for i, c in enumerate(class_names)}
    images = np.stack([decoded[i][1] for i in order])
    y = np.array([index[labels[i]] for i in order], dtype=np.int64)
    warnings = []
    if archive.skipped:
        warnings.append(
            f"left out {len(archive.skipped)} files that are not PNG, JPEG, BMP or GIF images: "
            + _listed(archive.skipped)
        )
    layout.write_images(
        Path(root),
        name,
        images,
        y,
        class_names=class_names,
        contact_sheet=contact_sheet(images, y, class_names),
        description=description,
        warnings=warnings,
    )


def _class_folders(paths: list[PurePosixPath]) -> list[str]:
    """Each image's class: its folder, under at most one folder wrapping them all."""
    firsts = {path.parts[0] for path in paths}
    wrapped = len(firsts) == 1 and all(len(path.parts) == 3 for path in paths)
    depth = 3 if wrapped else 2
    for path in paths:
        if len(path.parts) < depth:
            raise InvalidArgument(
                f"image {str(path)!r} is not in a class folder: the archive's folders are the "
                "classes (CLASS/IMAGE, inside at most one wrapping folder)"
            )
        if len(path.parts) > depth:
            raise InvalidArgument(
                f"image {str(path)!r} is nested too deep: the archive's folders are the "
                "classes (CLASS/IMAGE, inside at most one wrapping folder)"
            )
    return [path.parts[depth - 2] for path in paths]


def contact_sheet(images: np.ndarray, y: np.ndarray, class_names: list[str]) -> bytes:
    """A PNG with one row per class: its name and its first samples, enlarged to at least
    SHEET_CELL pixels a side (nearest neighbour: the pixels the models see)."""
    side = images.shape[1]
    scale = max(1, -(-SHEET_CELL // side))
    cell = side * scale
    shown = class_names[:SHEET_CLASSES]
    sheet = Image.new(
        "RGB",
        (SHEET_LABEL_WIDTH + SHEET_SAMPLES * (cell + 2), len(shown) * (cell + 2) + 2),
        SHEET_BACKGROUND,
    )
    draw = ImageDraw.Draw(sheet)
    for row, class_name in enumerate(shown):
        top = row * (cell + 2) + 2
        count = int(np.sum(y == row))
        draw.text((4, top + cell // 2 - 6), f"{class_name[:18]} ({count})", fill="black")
        for column, sample in enumerate(images[y == row][:SHEET_SAMPLES]):
            picture = Image.fromarray(sample[:, :, 0] if sample.shape[2] == 1 else sample)
            enlarged = picture.resize((cell, cell), Image.Resampling.NEAREST).convert("RGB")
            sheet.paste(enlarged, (SHEET_LABEL_WIDTH + column * (cell + 2), top))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def _listed(names: list[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:LISTED])
    return shown + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")

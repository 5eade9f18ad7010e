"""Cheap structural checks of an uploaded model file, run by the serving process before a
job is queued: standard library only (the onnx package, like scikit-learn, stays out of the
serving process; the full onnx.checker runs in the import job's worker)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import IO

from service.errors import InvalidArgument

# Protobuf wire types, and the ones the fields of onnx.ModelProto and GraphProto use.
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
_MODEL_FIELDS = {1: _VARINT, 5: _VARINT} | dict.fromkeys(
    (2, 3, 4, 6, 7, 8, 14, 20, 25, 26), _LENGTH
)
_GRAPH_FIELDS = dict.fromkeys((1, 2, 5, 10, 11, 12, 13, 14, 15, 16), _LENGTH)
_IR_VERSION, _GRAPH = 1, 7


class _Malformed(Exception):
    """The file is not a well-formed protobuf message of the expected kind."""


def check_file(path: Path, file_format: str) -> None:
    """Cheap structural checks of an uploaded model file, before any job is queued.

    ONNX: the file must parse as a protobuf onnx.ModelProto at its top level and at its
    graph's (every field well formed, none running past the end, ir_version and graph
    present). That refuses text, archives, other formats and truncated files in
    milliseconds, reading only field headers; the full onnx.checker runs in the job.
    skops: the file must be a zip archive holding skops' schema.json.
    """
    if file_format == "onnx":
        try:
            with path.open("rb") as handle:
                _check_onnx(handle, path.stat().st_size)
        except _Malformed as exc:
            raise InvalidArgument(
                f"not an ONNX model: {exc}; expected a serialized onnx.ModelProto "
                "(a .onnx file, self-contained)"
            ) from None
    elif file_format == "skops":
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError, EOFError):
            raise InvalidArgument(
                "not a skops file: it is not a zip archive (save with skops.io.dump)"
            ) from None
        if "schema.json" not in names:
            raise InvalidArgument(
                "not a skops file: the zip archive has no schema.json (save with skops.io.dump)"
            )


def _check_onnx(handle: IO[bytes], size: int) -> None:
    seen = _check_fields(handle, 0, size, _MODEL_FIELDS, "the model")
    if _IR_VERSION not in seen:
        raise _Malformed("it has no ir_version")
    if _GRAPH not in seen:
        raise _Malformed("it has no graph")
    start, length = seen[_GRAPH]
    _check_fields(handle, start, start + length, _GRAPH_FIELDS, "the graph")


def _check_fields(
    handle: IO[bytes], start: int, end: int, expected: dict[int, int], what: str
) -> dict[int, tuple[int, int]]:
    """Walks the fields of one message in [start, end); returns field -> (offset, length)
    of its last length-delimited occurrence (or (value, 0) for varints)."""
    seen: dict[int, tuple[int, int]] = {}
    handle.seek(start)
    position = start
    while position < end:
        key, position = _varint(handle, position, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed(f"{what} has a field numbered 0 at byte {position}")
        if number in expected and expected[number] != wire:
            raise _Malformed(f"{what}'s field {number} has wire type {wire} at byte {position}")
        if wire == _VARINT:
            value, position = _varint(handle, position, end)
            seen[number] = (value, 0)
            continue
        if wire == _LENGTH:
            length, position = _varint(handle, position, end)
            seen[number] = (position, length)
            skip = length
        elif wire in (_FIXED64, _FIXED32):
            skip = 8 if wire == _FIXED64 else 4
        else:
            raise _Malformed(f"{what} has a field of unknown wire type {wire} at byte {position}")
        if position + skip > end:
            raise _Malformed(f"{what}'s field {number} runs past the end of the file (truncated?)")
        position += skip
        handle.seek(position)
    return seen


def _varint(handle: IO[bytes], position: int, end: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 70, 7):
        if position >= end:
            raise _Malformed("the file ends inside a field header (truncated?)")
        byte = handle.read(1)
        if not byte:
            raise _Malformed("the file ends inside a field header (truncated?)")
        position += 1
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value, position
    raise _Malformed(f"a varint longer than 10 bytes at byte {position}")

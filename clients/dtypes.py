"""The one table between numpy dtypes and Open Inference Protocol v2 datatype strings.

Raw tensor contents on the wire are little-endian and row-major whatever the host, so every
wire dtype here is spelled with an explicit byte order. BYTES elements travel as a 4-byte
little-endian length and the bytes: numpy holds them as object arrays (str or bytes in,
str out, decoded as UTF-8).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class Datatype:
    """One OIP v2 datatype: its name, its wire dtype and its typed-contents field."""

    name: str
    dtype: np.dtype[np.generic]
    #: Field of InferTensorContents that carries it when a tensor is sent typed; FP16 has
    #: none, the protocol allows it only as raw bytes.
    contents_field: str | None


DATATYPES: Final[tuple[Datatype, ...]] = (
    Datatype("BOOL", np.dtype("?"), "bool_contents"),
    Datatype("UINT8", np.dtype("u1"), "uint_contents"),
    Datatype("UINT16", np.dtype("<u2"), "uint_contents"),
    Datatype("UINT32", np.dtype("<u4"), "uint_contents"),
    Datatype("UINT64", np.dtype("<u8"), "uint64_contents"),
    Datatype("INT8", np.dtype("i1"), "int_contents"),
    Datatype("INT16", np.dtype("<i2"), "int_contents"),
    Datatype("INT32", np.dtype("<i4"), "int_contents"),
    Datatype("INT64", np.dtype("<i8"), "int64_contents"),
    Datatype("FP16", np.dtype("<f2"), None),
    Datatype("FP32", np.dtype("<f4"), "fp32_contents"),
    Datatype("FP64", np.dtype("<f8"), "fp64_contents"),
    Datatype("BYTES", np.dtype(object), "bytes_contents"),
)

_BY_NAME: Final[dict[str, Datatype]] = {d.name: d for d in DATATYPES}
# Keyed by (kind, itemsize) so that a big-endian or native-order array finds its entry too.
_BY_KIND: Final[dict[tuple[str, int], Datatype]] = {
    (d.dtype.kind, d.dtype.itemsize): d for d in DATATYPES if d.name != "BYTES"
}
#: numpy kinds that are text: object (str or bytes items), unicode and bytes strings.
_TEXT_KINDS = "OUS"


def lookup(datatype: str) -> Datatype:
    """The table entry for a datatype string; ValueError names the supported ones."""
    try:
        return _BY_NAME[datatype.upper()]
    except KeyError:
        raise ValueError(
            f"unsupported datatype {datatype!r}; expected one of {', '.join(_BY_NAME)}"
        ) from None


def datatype_of(dtype: npt.DTypeLike) -> str:
    """The datatype string for a numpy dtype (any byte order)."""
    dt = np.dtype(dtype)
    if dt.kind in _TEXT_KINDS:
        return "BYTES"
    entry = _BY_KIND.get((dt.kind, dt.itemsize))
    if entry is None:
        raise ValueError(
            f"numpy dtype {dt} has no Open Inference Protocol datatype; "
            f"use one of {', '.join(str(d.dtype) for d in DATATYPES)}"
        )
    return entry.name


def dtype_of(datatype: str) -> np.dtype[np.generic]:
    """The numpy dtype, in native byte order, that a datatype string decodes to."""
    return lookup(datatype).dtype.newbyteorder("=")


def to_raw(array: npt.ArrayLike) -> bytes:
    """Little-endian, row-major bytes of an array, as raw_input_contents carries them."""
    arr = np.asarray(array)
    datatype = datatype_of(arr.dtype)
    if datatype == "BYTES":
        return b"".join(_length_prefixed(item) for item in arr.reshape(-1))
    wire = _BY_NAME[datatype].dtype
    return np.ascontiguousarray(arr, dtype=wire).tobytes()


def _length_prefixed(item: object) -> bytes:
    data = item if isinstance(item, bytes) else str(item).encode()
    return _LENGTH.pack(len(data)) + data


def texts(items: Sequence[bytes | str], shape: tuple[int, ...] | list[int]) -> np.ndarray:
    """BYTES elements as an object array of str (UTF-8), or of bytes where not text."""
    array = np.empty(len(items), dtype=object)
    for index, item in enumerate(items):
        array[index] = _text(item)
    return array.reshape(tuple(shape))


def from_raw(raw: bytes, datatype: str, shape: tuple[int, ...] | list[int]) -> np.ndarray:
    """Decodes raw contents into an array of that shape (native byte order, read-only)."""
    entry = lookup(datatype)
    count = int(np.prod(shape, dtype=np.int64))
    if entry.name == "BYTES":
        items, offset = [], 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise ValueError("truncated BYTES tensor: a length prefix is cut short")
            (length,) = _LENGTH.unpack_from(raw, offset)
            if offset + 4 + length > len(raw):
                raise ValueError("truncated BYTES tensor: an element runs past the end")
            items.append(raw[offset + 4 : offset + 4 + length])
            offset += 4 + length
        if len(items) != count:
            raise ValueError(f"BYTES tensor of shape {list(shape)} holds {len(items)} elements")
        return texts(items, shape)
    if len(raw) != count * entry.dtype.itemsize:
        raise ValueError(
            f"{datatype} tensor of shape {list(shape)} needs "
            f"{count * entry.dtype.itemsize} bytes, got {len(raw)}"
        )
    arr = np.frombuffer(raw, dtype=entry.dtype).reshape(tuple(shape))
    native = entry.dtype.newbyteorder("=")
    # Only a big-endian host pays for a copy here.
    return arr if arr.dtype == native else arr.astype(native)


def _text(item: bytes | str) -> bytes | str:
    if isinstance(item, bytes):
        try:
            return item.decode()
        except UnicodeDecodeError:
            return item
    return item

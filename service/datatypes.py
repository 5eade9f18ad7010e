"""The one datatype table: every fact about a tensor datatype, by its OIP v2 name.

Imported by the serving process (codec, ModelConfig, runtime, loader) and by worker
processes (export), so it imports numpy and the standard library only: the protobuf and
ONNX facts are plain strings and numbers, not their modules' objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from service.registry.manifest import TensorSpec


@dataclass(frozen=True)
class Datatype:
    """One OIP v2 datatype and what it is called everywhere else."""

    #: The OIP v2 datatype string ("FP32").
    name: str
    #: What numpy holds it in; BYTES travels as object arrays of bytes.
    dtype: np.dtype
    #: onnx.TensorProto.DataType's number (1 is FLOAT).
    onnx_type: int
    #: ONNX Runtime's type string for a tensor of it ("tensor(float)").
    ort_type: str
    #: The InferTensorContents field carrying it when sent typed; None where OIP v2 has
    #: none (FP16 must travel as raw bytes).
    contents_field: str | None
    #: Triton's ModelConfig DataType name ("TYPE_FP32"; BYTES is "TYPE_STRING").
    config_type: str
    #: Bytes per element on the wire; 0 for BYTES, whose elements carry their own length.
    size: int


def _datatype(
    name: str, dtype: type, onnx_type: int, ort: str, field: str | None, config: str = ""
) -> Datatype:
    numpy_dtype = np.dtype(dtype)
    return Datatype(
        name=name,
        dtype=numpy_dtype,
        onnx_type=onnx_type,
        ort_type=f"tensor({ort})",
        contents_field=field,
        config_type=config or f"TYPE_{name}",
        size=0 if numpy_dtype == np.dtype(np.object_) else numpy_dtype.itemsize,
    )


DATATYPES: dict[str, Datatype] = {
    d.name: d
    for d in (
        _datatype("BOOL", np.bool_, 9, "bool", "bool_contents"),
        _datatype("UINT8", np.uint8, 2, "uint8", "uint_contents"),
        _datatype("UINT16", np.uint16, 4, "uint16", "uint_contents"),
        _datatype("UINT32", np.uint32, 12, "uint32", "uint_contents"),
        _datatype("UINT64", np.uint64, 13, "uint64", "uint64_contents"),
        _datatype("INT8", np.int8, 3, "int8", "int_contents"),
        _datatype("INT16", np.int16, 5, "int16", "int_contents"),
        _datatype("INT32", np.int32, 6, "int32", "int_contents"),
        _datatype("INT64", np.int64, 7, "int64", "int64_contents"),
        _datatype("FP16", np.float16, 10, "float16", None),
        _datatype("FP32", np.float32, 1, "float", "fp32_contents"),
        _datatype("FP64", np.float64, 11, "double", "fp64_contents"),
        _datatype("BYTES", np.object_, 8, "string", "bytes_contents", "TYPE_STRING"),
    )
}
BY_ORT_TYPE: dict[str, Datatype] = {d.ort_type: d for d in DATATYPES.values()}
_BY_DTYPE: dict[np.dtype, Datatype] = {d.dtype: d for d in DATATYPES.values()}
#: The wire is little-endian: the dtypes to read raw contents with, made once.
WIRE_DTYPES: dict[str, np.dtype] = {
    name: d.dtype.newbyteorder("<") for name, d in DATATYPES.items()
}
FLOAT_DATATYPES = frozenset(("FP16", "FP32", "FP64"))


def datatype_of(array: np.ndarray) -> str:
    """The OIP v2 datatype of a numpy array; ValueError where there is none."""
    try:
        return _BY_DTYPE[array.dtype].name
    except KeyError:
        raise ValueError(f"no OIP v2 datatype for numpy dtype {array.dtype}") from None


class NotATensor(ValueError):
    """A model input or output no OIP v2 tensor can carry (a sequence, a map, bfloat16)."""


class NodeArgLike(Protocol):
    """What tensor_spec reads of onnxruntime.NodeArg (kept structural: no ORT import)."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def shape(self) -> Sequence[int | str | None] | None: ...


def tensor_spec(node: NodeArgLike) -> TensorSpec:
    """The signature entry of one ONNX Runtime input or output.

    Named (symbolic), unknown and negative dims become -1, the free dim. A type without an
    OIP v2 datatype raises NotATensor: such a model cannot be served, and saying so at
    export or load beats a request failing later.
    """
    datatype = BY_ORT_TYPE.get(node.type)
    if datatype is None:
        if node.type.startswith("tensor("):
            raise NotATensor(
                f"model input/output {node.name!r} has type {node.type}, which no OIP v2 "
                f"datatype carries; use one of {sorted(BY_ORT_TYPE)}"
            )
        raise NotATensor(
            f"model input/output {node.name!r} has type {node.type}; only tensors can be served "
            "(for scikit-learn classifiers, convert with options zipmap=False)"
        )
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in node.shape or ())
    return TensorSpec(name=node.name, datatype=datatype.name, shape=shape)

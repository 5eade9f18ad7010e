"""Plain tensor types of the data plane and the one datatype table of the service."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# OIP v2 datatype string <-> numpy dtype. BYTES travels as numpy object arrays of bytes.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
_BY_DTYPE = {dtype: name for name, dtype in DATATYPES.items()}
# The wire is little-endian: these are the dtypes to read raw contents with, made once.
WIRE_DTYPES: dict[str, np.dtype] = {
    name: dtype.newbyteorder("<") for name, dtype in DATATYPES.items()
}

# ONNX Runtime's type strings ("tensor(float)") -> OIP v2 datatypes.
ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def datatype_of(array: np.ndarray) -> str:
    try:
        return _BY_DTYPE[array.dtype]
    except KeyError:
        raise ValueError(f"no OIP v2 datatype for numpy dtype {array.dtype}") from None


# Plain slotted dataclasses: frozen ones pay object.__setattr__ per field, per request.
@dataclass(slots=True)
class InferInput:
    """A decoded input tensor."""

    name: str
    datatype: str
    data: np.ndarray


@dataclass(slots=True)
class InferOutput:
    """An output tensor ready to encode."""

    name: str
    datatype: str
    data: np.ndarray


@dataclass(slots=True)
class InferRequest:
    """A decoded ModelInfer request; `outputs` empty means every output."""

    model_name: str
    model_version: str
    inputs: list[InferInput]
    outputs: list[str] = field(default_factory=list)
    id: str = ""
    #: time.perf_counter() when the request reached the server; latency starts here.
    arrived: float = 0.0
    #: time.perf_counter() after which the caller no longer waits (its gRPC deadline).
    deadline: float | None = None


@dataclass(slots=True)
class InferResponse:
    """A ModelInfer answer before encoding."""

    model_name: str
    model_version: str
    outputs: list[InferOutput]
    id: str = ""
    parameters: dict[str, str] = field(default_factory=dict)

"""The only place protobuf tensors become numpy arrays and back (OIP v2 ModelInfer).

Raw contents are the fast path: one `np.frombuffer` per input, no copy. Typed contents are
accepted too (a grpcurl user sending JSON) and answered in kind.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from service.errors import InvalidArgument
from service.gen.inference import grpc_predict_v2_pb2 as pb
from service.serving.tensors import (
    DATATYPES,
    WIRE_DTYPES,
    InferInput,
    InferRequest,
    InferResponse,
)

# Which InferTensorContents field carries each datatype when sent typed.
CONTENT_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_LENGTH = struct.Struct("<I")


def decode_request(
    request: pb.ModelInferRequest, *, arrived: float = 0.0, deadline: float | None = None
) -> InferRequest:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one entry per input, in order"
        )
    inputs = []
    for index, tensor in enumerate(request.inputs):
        dtype = DATATYPES.get(tensor.datatype)
        if dtype is None:
            raise InvalidArgument(
                f"input {tensor.name!r}: datatype {tensor.datatype!r} is not one of "
                f"{sorted(DATATYPES)}"
            )
        shape = tuple(tensor.shape)
        if shape and min(shape) < 0:
            raise InvalidArgument(f"input {tensor.name!r}: shape {list(shape)} has a negative dim")
        count = math.prod(shape)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidArgument(
                    f"input {tensor.name!r} has typed contents although raw_input_contents is "
                    "used; send all inputs one way"
                )
            data = _from_raw(tensor.name, tensor.datatype, dtype, shape, count, raw[index])
        else:
            data = _from_typed(tensor, dtype, shape, count)
        inputs.append(InferInput(name=tensor.name, datatype=tensor.datatype, data=data))
    return InferRequest(
        model_name=request.model_name,
        model_version=request.model_version,
        inputs=inputs,
        outputs=[output.name for output in request.outputs],
        id=request.id,
        arrived=arrived,
        deadline=deadline,
    )


def encode_response(response: InferResponse, *, typed: bool) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id,
    )
    for key, value in response.parameters.items():
        message.parameters[key].string_param = value
    for output in response.outputs:
        tensor = message.outputs.add(
            name=output.name, datatype=output.datatype, shape=output.data.shape
        )
        if typed:
            _to_typed(tensor, output.datatype, output.data)
        elif output.datatype == "BYTES":
            message.raw_output_contents.append(_serialize_bytes(output.data))
        else:
            message.raw_output_contents.append(np.ascontiguousarray(output.data).tobytes())
    return message


def _from_raw(
    name: str, datatype: str, dtype: np.dtype, shape: tuple[int, ...], count: int, raw: bytes
) -> np.ndarray:
    if datatype == "BYTES":
        return _deserialize_bytes(name, raw, count).reshape(shape)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidArgument(
            f"input {name!r}: {len(raw)} bytes of raw content, but shape {list(shape)} of "
            f"{datatype} needs {expected}"
        )
    return np.frombuffer(raw, dtype=WIRE_DTYPES[datatype]).reshape(shape)


def _from_typed(
    tensor: pb.ModelInferRequest.InferInputTensor,
    dtype: np.dtype,
    shape: tuple[int, ...],
    count: int,
) -> np.ndarray:
    field = CONTENT_FIELDS.get(tensor.datatype)
    if field is None:
        raise InvalidArgument(f"input {tensor.name!r}: {tensor.datatype} must be sent as raw bytes")
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise InvalidArgument(
            f"input {tensor.name!r}: {len(values)} values in {field}, but shape "
            f"{list(shape)} needs {count}"
        )
    if tensor.datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    try:
        return np.asarray(values, dtype=dtype).reshape(shape)
    except OverflowError:
        raise InvalidArgument(
            f"input {tensor.name!r}: a value does not fit {tensor.datatype}"
        ) from None


def _to_typed(
    tensor: pb.ModelInferResponse.InferOutputTensor, datatype: str, data: np.ndarray
) -> None:
    field = CONTENT_FIELDS.get(datatype)
    if field is None:  # FP16 has no typed field: widen it, as clients expect numbers
        tensor.datatype = "FP32"
        field = "fp32_contents"
        data = data.astype(np.float32)
    getattr(tensor.contents, field).extend(data.reshape(-1).tolist())


def _deserialize_bytes(name: str, raw: bytes, count: int) -> np.ndarray:
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidArgument(f"input {name!r}: truncated BYTES length prefix")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidArgument(f"input {name!r}: BYTES element overruns the raw content")
        items.append(raw[offset : offset + length])
        offset += length
    if len(items) != count:
        raise InvalidArgument(f"input {name!r}: {len(items)} BYTES elements, shape needs {count}")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def _serialize_bytes(data: np.ndarray) -> bytes:
    parts = []
    for item in data.reshape(-1):
        encoded = item if isinstance(item, bytes) else str(item).encode()
        parts.append(_LENGTH.pack(len(encoded)) + encoded)
    return b"".join(parts)

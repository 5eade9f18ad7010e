"""Where OIP v2 tensors become numpy arrays and back, for gRPC (protobuf) and REST alike.

The protocol-neutral part (`check_length`, `input_layout`, `from_raw`, `serialize_bytes`) is
what both transports call: REST's binary tensor data extension carries the same bytes as
gRPC's raw contents, so it is checked by the same code with the same messages
(service/api/rest/codec.py adds only the JSON framing).

Raw contents are the fast path: one `np.frombuffer` per input, no copy. Typed contents are
accepted too (a grpcurl user sending JSON) and answered in kind.

Also the bound on request strings (`check_strings`): a name no model or dataset can have
must not travel into the registry, nor be echoed back in an error message, whose trailers
gRPC refuses past 8 KiB (the client would see RESOURCE_EXHAUSTED "Stream removed").
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable

import numpy as np
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from service.datatypes import DATATYPES, WIRE_DTYPES, Datatype
from service.errors import InvalidArgument
from service.gen.inference import grpc_predict_v2_pb2 as pb
from service.serving.tensors import InferInput, InferRequest, InferResponse

_LENGTH = struct.Struct("<I")
#: The longest string a request field may carry: names are at most 128 characters.
MAX_STRING_CHARS = 1024
#: Free-text fields that may be longer (stored, never echoed in errors).
LONG_STRING_FIELDS = {"description": 64 * 1024}
#: Most dims an input may have (numpy's own limit is 64; no model has nearly as many).
MAX_DIMS = 32
#: Largest size in bytes a shape may describe, zero dims aside: numpy cannot even describe
#: an empty array of shape [0, 2**62, 2**62], so such shapes stop here.
_MAX_SPAN_BYTES = 2**62


def check_strings(message: Message, prefix: str = "") -> None:
    """Raises InvalidArgument for any string in message (nested, repeated and map keys
    included) longer than MAX_STRING_CHARS; names the field, does not echo the value."""
    for field, value in message.ListFields():
        where = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            limit = LONG_STRING_FIELDS.get(field.name, MAX_STRING_CHARS)
            for item in value if field.is_repeated else (value,):
                check_length(item, where, limit)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                for key, item in value.items():
                    if isinstance(key, str):
                        check_length(key, f"{where} key", MAX_STRING_CHARS)
                    if isinstance(item, Message):
                        check_strings(item, f"{where}[...].")
            else:
                for item in value if field.is_repeated else (value,):
                    check_strings(item, f"{where}.")


def check_length(value: str, where: str, limit: int = MAX_STRING_CHARS) -> None:
    """InvalidArgument if value is longer than limit; names where, never echoes value."""
    if len(value) > limit:
        raise InvalidArgument(
            f"{where} is {len(value)} characters long; the most accepted is {limit}"
        )


def decode_request(
    request: pb.ModelInferRequest, *, arrived: float = 0.0, deadline: float | None = None
) -> InferRequest:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one entry per input, in order"
        )
    check_length(request.model_name, "model_name")
    check_length(request.model_version, "model_version")
    inputs = []
    for index, tensor in enumerate(request.inputs):
        datatype, shape, count = input_layout(tensor.name, tensor.datatype, tensor.shape)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidArgument(
                    f"input {tensor.name!r} has typed contents although raw_input_contents is "
                    "used; send all inputs one way"
                )
            data = from_raw(tensor.name, datatype, shape, count, raw[index])
        else:
            data = _from_typed(tensor, datatype, shape, count)
        inputs.append(InferInput(name=tensor.name, datatype=tensor.datatype, data=data))
    for output in request.outputs:
        check_length(output.name, "output name")
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
            message.raw_output_contents.append(serialize_bytes(output.data))
        else:
            message.raw_output_contents.append(np.ascontiguousarray(output.data).tobytes())
    return message


def input_layout(
    name: str, datatype_name: str, dims: Iterable[int]
) -> tuple[Datatype, tuple[int, ...], int]:
    """An input's datatype, shape and element count, once its name, datatype and shape are
    ones this server can hold (the model's own signature is checked by the data plane)."""
    check_length(name, "input name")
    datatype = DATATYPES.get(datatype_name)
    if datatype is None:
        check_length(datatype_name, f"input {name!r}: datatype")
        raise InvalidArgument(
            f"input {name!r}: datatype {datatype_name!r} is not one of {sorted(DATATYPES)}"
        )
    shape = tuple(dims)
    return datatype, shape, _count(name, shape)


def _count(name: str, shape: tuple[int, ...]) -> int:
    """The element count of shape, once shape is one numpy can hold."""
    if len(shape) > MAX_DIMS:
        raise InvalidArgument(
            f"input {name!r}: shape has {len(shape)} dims; at most {MAX_DIMS} are accepted"
        )
    if shape and min(shape) < 0:
        raise InvalidArgument(f"input {name!r}: shape {list(shape)} has a negative dim")
    count = math.prod(shape)
    # 8: the widest element (or pointer). Only an empty shape needs its other dims
    # multiplied again (the generator stays off the usual path).
    span = (count or math.prod(dim or 1 for dim in shape)) * 8
    if span > _MAX_SPAN_BYTES:
        raise InvalidArgument(f"input {name!r}: shape {list(shape)} is too large")
    return count


def from_raw(
    name: str, datatype: Datatype, shape: tuple[int, ...], count: int, raw: bytes | memoryview
) -> np.ndarray:
    """An input from its little-endian bytes (BYTES: 4-byte length-prefixed elements), read
    in place where the datatype allows (a read-only view of raw)."""
    if datatype.name == "BYTES":
        return _deserialize_bytes(name, bytes(raw), count).reshape(shape)
    expected = count * datatype.size
    if len(raw) != expected:
        raise InvalidArgument(
            f"input {name!r}: {len(raw)} bytes of raw content, but shape {list(shape)} of "
            f"{datatype.name} needs {expected}"
        )
    return np.frombuffer(raw, dtype=WIRE_DTYPES[datatype.name]).reshape(shape)


def _from_typed(
    tensor: pb.ModelInferRequest.InferInputTensor,
    datatype: Datatype,
    shape: tuple[int, ...],
    count: int,
) -> np.ndarray:
    field = datatype.contents_field
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
        array[:] = _texts(tensor.name, list(values))
        return array.reshape(shape)
    try:
        return np.asarray(values, dtype=datatype.dtype).reshape(shape)
    except OverflowError:
        raise InvalidArgument(
            f"input {tensor.name!r}: a value does not fit {tensor.datatype}"
        ) from None


def _to_typed(
    tensor: pb.ModelInferResponse.InferOutputTensor, datatype: str, data: np.ndarray
) -> None:
    field = DATATYPES[datatype].contents_field
    if field is None:  # FP16 has no typed field: widen it, as clients expect numbers
        tensor.datatype = "FP32"
        field = "fp32_contents"
        data = data.astype(np.float32)
    getattr(tensor.contents, field).extend(data.reshape(-1).tolist())


def _deserialize_bytes(name: str, raw: bytes, count: int) -> np.ndarray:
    """Length-prefixed elements as str: ONNX Runtime's string tensors take text, so text is
    what BYTES carries here, and an element that is not UTF-8 is refused at the door."""
    items: list[str] = []
    append, unpack, end = items.append, _LENGTH.unpack_from, len(raw)
    offset = 0
    while offset < end:
        if offset + 4 > end:
            raise InvalidArgument(f"input {name!r}: truncated BYTES length prefix")
        (length,) = unpack(raw, offset)
        start = offset + 4
        offset = start + length
        if offset > end:
            raise InvalidArgument(f"input {name!r}: BYTES element overruns the raw content")
        if len(items) == count:  # stop early: a 64 MiB message holds 16 M empty elements
            raise InvalidArgument(
                f"input {name!r}: more than {count} BYTES elements, shape needs {count}"
            )
        try:
            append(raw[start:offset].decode())
        except UnicodeDecodeError:
            raise InvalidArgument(
                f"input {name!r}: element {len(items)} is not UTF-8 text"
            ) from None
    if len(items) != count:
        raise InvalidArgument(f"input {name!r}: {len(items)} BYTES elements, shape needs {count}")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def _texts(name: str, values: list[bytes]) -> list[str]:
    """Typed bytes_contents as str (see _deserialize_bytes)."""
    try:
        return [value.decode() for value in values]
    except UnicodeDecodeError:
        index = next(i for i, v in enumerate(values) if not _is_utf8(v))
        raise InvalidArgument(f"input {name!r}: element {index} is not UTF-8 text") from None


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


def serialize_bytes(data: np.ndarray) -> bytes:
    """A BYTES tensor as 4-byte little-endian length-prefixed elements (str as UTF-8)."""
    parts = []
    for item in data.reshape(-1):
        encoded = item if isinstance(item, bytes) else str(item).encode()
        parts.append(_LENGTH.pack(len(encoded)) + encoded)
    return b"".join(parts)

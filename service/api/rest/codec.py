"""OIP v2 REST inference bodies: JSON tensors and the binary tensor data extension.

A body is a JSON header, optionally followed by binary tensor data; the header's length is
the Inference-Header-Content-Length header (tritonclient.http sends this by default). An
input with `parameters.binary_data_size` takes its bytes from the binary part, in input
order, laid out as gRPC's raw contents are: the checks and messages are service/api/codec's
own. An output goes back binary where the request asks (`binary_data` on the output, or
`binary_data_output` for the request), as JSON "data" otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.api.codec import check_length, from_raw, input_layout, serialize_bytes
from service.datatypes import Datatype
from service.errors import InvalidArgument
from service.serving.tensors import InferInput, InferRequest, InferResponse

HEADER_LENGTH = "inference-header-content-length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
_INTEGER_KINDS = frozenset("iu")
_NUMBER_KINDS = frozenset("iufb")
_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


@dataclass(slots=True)
class Answer:
    """How the response goes back: which outputs travel binary."""

    binary_outputs: frozenset[str]
    binary_default: bool

    def binary(self, name: str) -> bool:
        return name in self.binary_outputs or self.binary_default


def decode_infer(
    body: bytes,
    header_length: str | None,
    model_name: str,
    model_version: str,
    *,
    arrived: float,
) -> tuple[InferRequest, Answer]:
    """The data plane's request and the answer's layout from a POST .../infer body."""
    view = memoryview(body)
    split = len(body) if header_length is None else _header_length(header_length, len(body))
    header = _object(_json(view[:split]), "the request")
    binary = view[split:]
    request_id = _text(header.get("id", ""), "id")
    inputs_json = header.get("inputs")
    if not isinstance(inputs_json, list):
        raise InvalidArgument('the request needs "inputs": a list of tensors')
    inputs = []
    offset = 0
    for item in inputs_json:
        tensor = _object(item, "an input")
        name = _text(tensor.get("name"), "input name")
        datatype, shape, count = input_layout(
            name,
            _text(tensor.get("datatype"), f"input {name!r}: datatype"),
            _shape(name, tensor.get("shape")),
        )
        size = _object(tensor.get("parameters") or {}, f"input {name!r}: parameters").get(
            "binary_data_size"
        )
        if size is not None:
            if "data" in tensor:
                raise InvalidArgument(
                    f'input {name!r} has both "data" and binary_data_size; send it one way'
                )
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidArgument(f"input {name!r}: binary_data_size must be a whole number")
            if offset + size > len(binary):
                raise InvalidArgument(
                    f"input {name!r}: binary_data_size {size} runs past the {len(binary)} "
                    "bytes of binary data after the JSON header"
                )
            data = from_raw(name, datatype, shape, count, binary[offset : offset + size])
            offset += size
        elif "data" in tensor:
            data = _from_json(name, datatype, shape, count, tensor["data"])
        else:
            raise InvalidArgument(
                f'input {name!r} has neither "data" nor parameters.binary_data_size'
            )
        inputs.append(InferInput(name=name, datatype=datatype.name, data=data))
    if offset != len(binary):
        raise InvalidArgument(
            f"{len(binary)} bytes of binary data follow the JSON header, but the inputs' "
            f"binary_data_size add up to {offset}"
        )
    parameters = _object(header.get("parameters") or {}, "parameters")
    outputs, binary_outputs = [], set()
    for item in _list(header.get("outputs") or [], "outputs"):
        output = _object(item, "an output")
        name = _text(output.get("name"), "output name")
        outputs.append(name)
        if _object(output.get("parameters") or {}, f"output {name!r}: parameters").get(
            "binary_data"
        ):
            binary_outputs.add(name)
    answer = Answer(frozenset(binary_outputs), bool(parameters.get("binary_data_output")))
    request = InferRequest(
        model_name=model_name,
        model_version=model_version,
        inputs=inputs,
        outputs=outputs,
        id=request_id,
        arrived=arrived,
    )
    return request, answer


def encode_infer(response: InferResponse, answer: Answer) -> tuple[bytes, int | None]:
    """The response body and, when outputs travel binary, the JSON header's length."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for output in response.outputs:
        data, datatype = output.data, output.datatype
        tensor: dict[str, Any] = {"name": output.name, "datatype": datatype, "shape": data.shape}
        if answer.binary(output.name):
            blob = (
                serialize_bytes(data) if datatype == "BYTES"
                else np.ascontiguousarray(data).tobytes()
            )  # fmt: skip
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["datatype"], tensor["data"] = _to_json(datatype, data)
        outputs.append(tensor)
    message: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id:
        message["id"] = response.id
    message["parameters"] = response.parameters
    message["outputs"] = outputs
    header = orjson.dumps(message, option=_DUMP_OPTIONS)
    if not blobs:
        return header, None
    return b"".join((header, *blobs)), len(header)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=_DUMP_OPTIONS)


def _header_length(value: str, body_length: int) -> int:
    try:
        length = int(value)
    except ValueError:
        raise InvalidArgument(
            "Inference-Header-Content-Length must be a whole number of bytes"
        ) from None
    if not 0 <= length <= body_length:
        raise InvalidArgument(
            f"Inference-Header-Content-Length is {length}, but the body has {body_length} bytes"
        )
    return length


def _json(data: memoryview) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(
            f"the request's JSON header does not parse ({exc}); with binary tensor data, "
            "Inference-Header-Content-Length must give the JSON's length in bytes"
        ) from None


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidArgument(f"{what} must be a JSON list")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a JSON string")
    check_length(value, what)
    return value


def _shape(name: str, value: Any) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(dim, int) and not isinstance(dim, bool) for dim in value
    ):
        raise InvalidArgument(f"input {name!r}: shape must be a list of whole numbers")
    return value


def _from_json(
    name: str, datatype: Datatype, shape: tuple[int, ...], count: int, values: Any
) -> np.ndarray:
    """An input from its JSON "data": flat or nested as the shape, of JSON numbers, true and
    false for BOOL, strings for BYTES; no silent conversions (a string is not a number)."""
    if not isinstance(values, list):
        raise InvalidArgument(f'input {name!r}: "data" must be a list')
    if datatype.name == "BYTES":
        flat = _flatten(values)
        if not all(isinstance(value, str) for value in flat):
            raise InvalidArgument(f"input {name!r}: BYTES data must be JSON strings")
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
    else:
        try:
            array = np.array(values)
        except (ValueError, OverflowError):
            raise InvalidArgument(
                f'input {name!r}: "data" is ragged or holds a value no number type fits'
            ) from None
        kind = array.dtype.kind
        allowed = {"BOOL": "b"}.get(datatype.name) or (
            _INTEGER_KINDS if datatype.dtype.kind in _INTEGER_KINDS else _NUMBER_KINDS
        )
        if array.size and kind not in allowed:
            raise InvalidArgument(
                f'input {name!r}: "data" holds values that are not {datatype.name} '
                "(JSON numbers; true and false for BOOL)"
            )
        if kind in _INTEGER_KINDS and datatype.dtype.kind in _INTEGER_KINDS and array.size:
            limits = np.iinfo(datatype.dtype)
            if array.min() < limits.min or array.max() > limits.max:
                raise InvalidArgument(f"input {name!r}: a value does not fit {datatype.name}")
        array = array.astype(datatype.dtype, copy=False)
    if array.size != count:
        raise InvalidArgument(
            f'input {name!r}: {array.size} values in "data", but shape {list(shape)} needs {count}'
        )
    return array.reshape(shape)


def _flatten(values: list[Any]) -> list[Any]:
    if not any(isinstance(value, list) for value in values):
        return values
    flat: list[Any] = []
    for value in values:
        flat.extend(_flatten(value) if isinstance(value, list) else (value,))
    return flat


def _to_json(datatype: str, data: np.ndarray) -> tuple[str, Any]:
    """An output's datatype and flat "data" as JSON takes them (FP16 widened to FP32, as
    gRPC's typed contents do)."""
    flat = data.reshape(-1)
    if datatype == "BYTES":
        return datatype, [v if isinstance(v, str) else bytes(v).decode() for v in flat.tolist()]
    if datatype == "FP16":
        return "FP32", flat.astype(np.float32)
    return datatype, np.ascontiguousarray(flat)

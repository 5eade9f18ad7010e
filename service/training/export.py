"""What every exported or imported ONNX model goes through, whichever library made it.

check_model validates the graph, signature reads what the serving side will see, run_onnx and
parity_error compare ONNX Runtime against the native model. Those run in worker processes.

check_file is the exception: the serving process runs it on an uploaded import before
queuing a job, so it uses the standard library only (the onnx package, like scikit-learn,
stays out of the serving process: it is imported inside the functions that need it).
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
import onnxruntime as ort
from google.protobuf.message import DecodeError

from service.errors import InvalidArgument
from service.registry.manifest import TensorSpec
from service.serving.tensors import ORT_TYPES

if TYPE_CHECKING:
    import onnx

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


class ParityError(Exception):
    """ONNX Runtime and the native model disagree by more than the tolerance."""


def _parse(onnx_bytes: bytes) -> onnx.ModelProto:
    import onnx

    try:
        return onnx.load_model_from_string(onnx_bytes)
    except (DecodeError, ValueError) as exc:
        raise InvalidArgument(f"not an ONNX model (protobuf decoding failed: {exc})") from None


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in graph, its nodes' attributes and their subgraphs (If, Loop...)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def check_model(onnx_bytes: bytes) -> None:
    """Raises InvalidArgument unless onnx_bytes is one valid, self-contained ONNX model.

    External data is refused: the registry stores and serves model.onnx alone, and a path in a
    model file that points elsewhere on disk must never be followed.
    """
    import onnx

    model = _parse(onnx_bytes)
    external = [
        tensor.name or "(unnamed)"
        for tensor in _tensors(model.graph)
        if tensor.data_location == onnx.TensorProto.EXTERNAL
    ]
    if external:
        shown = ", ".join(external[:5]) + (" ..." if len(external) > 5 else "")
        raise InvalidArgument(
            f"the ONNX model keeps {len(external)} tensor(s) in external data files ({shown}); "
            "only self-contained models are accepted: re-save it with "
            "onnx.save_model(model, path, save_as_external_data=False)"
        )
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise InvalidArgument(f"the ONNX model is invalid: {exc}") from None


def _session(onnx_bytes: bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT raises its own untyped errors (Fail, InvalidGraph, ...)
        raise InvalidArgument(f"ONNX Runtime cannot load the model: {exc}") from None


def _spec(arg: ort.NodeArg) -> TensorSpec:
    datatype = ORT_TYPES.get(arg.type)
    if datatype is None:
        raise InvalidArgument(
            f"model input/output {arg.name!r} has type {arg.type}; only tensors can be served "
            "(for scikit-learn classifiers, convert with options zipmap=False)"
        )
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in arg.shape or ())
    return TensorSpec(name=arg.name, datatype=datatype, shape=shape)


def signature(onnx_bytes: bytes) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs as ONNX Runtime sees them; named or unknown dimensions become -1."""
    session = _session(onnx_bytes, threads=1)
    return [_spec(a) for a in session.get_inputs()], [_spec(a) for a in session.get_outputs()]


def run_onnx(
    onnx_bytes: bytes, inputs: dict[str, np.ndarray], *, threads: int = 1
) -> dict[str, np.ndarray]:
    """All outputs of one CPU run, by name."""
    session = _session(onnx_bytes, threads)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def _is_float(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.floating)


def parity_error(native: dict[str, np.ndarray], onnx_out: dict[str, np.ndarray]) -> float:
    """Largest absolute difference between native and ONNX outputs, over native's outputs.

    Float outputs (probabilities, predictions, scores) compare by value. Discrete outputs
    (labels) must agree exactly: any disagreement, like a missing output or a shape mismatch,
    makes the error infinite, so that no tolerance lets a changed prediction through.
    """
    worst = 0.0
    for name, expected in native.items():
        got = onnx_out.get(name)
        if got is None or np.shape(got) != np.shape(expected):
            return math.inf
        if expected.size == 0:
            continue
        if _is_float(expected) and (_is_float(got) or np.issubdtype(got.dtype, np.integer)):
            diff = np.abs(expected.astype(np.float64) - got.astype(np.float64))
            # NaN on both sides is agreement; NaN on one side is not.
            both_nan = np.isnan(expected) & np.isnan(got)
            diff = np.where(both_nan, 0.0, diff)
            error = float(np.max(diff))
            if math.isnan(error):
                return math.inf
            worst = max(worst, error)
        elif not np.array_equal(expected, got):
            return math.inf
    return worst


def output_scale(native: dict[str, np.ndarray]) -> float:
    """max(1, largest |value| of native's float outputs): parity tolerances are relative to it."""
    scale = 1.0
    for array in native.values():
        if _is_float(array) and array.size:
            scale = max(scale, float(np.nanmax(np.abs(array))))
    return scale

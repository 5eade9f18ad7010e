"""What every exported or imported ONNX model goes through, whichever library made it.

check_model validates the graph, signature reads what the serving side will see, run_onnx,
parity_error and check_parity compare ONNX Runtime against the native model, and
cpu_only_domains says which part of a graph ONNX Runtime's CUDA provider cannot run. The cheap
up-front check of an uploaded file, which the serving process runs, is training/uploads.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
from google.protobuf.message import DecodeError

from service.datatypes import NotATensor, tensor_spec
from service.errors import InvalidArgument
from service.registry.manifest import TensorSpec

if TYPE_CHECKING:
    import onnx


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
    try:
        return tensor_spec(arg)
    except NotATensor as exc:
        raise InvalidArgument(str(exc)) from None


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


def check_parity(
    native: dict[str, np.ndarray], onnx_out: dict[str, np.ndarray], tolerance: float
) -> float:
    """The parity error, or ParityError when it exceeds tolerance relative to the outputs."""
    error = parity_error(native, onnx_out)
    scale = output_scale(native)
    if not error <= tolerance * scale:
        per_output = ", ".join(
            f"{name}: {parity_error({name: native[name]}, onnx_out):.3g}" for name in native
        )
        raise ParityError(
            f"ONNX Runtime disagrees with the trained model: max abs error {error:.3g} > "
            f"tolerance {tolerance:g} x scale {scale:.3g} (per output: {per_output}; "
            "a label mismatch counts as inf)"
        )
    return error


def cpu_only_domains(onnx_bytes: bytes) -> list[str]:
    """The manifest's cpu_only_domains: ONNX Runtime's CUDA provider has no kernel for any
    ai.onnx.ml operator, so those nodes run on the CPU provider even in a CUDA session."""
    # Nodes only: skl2onnx declares the ai.onnx.ml opset even where no node uses it.
    return ["ai.onnx.ml"] if uses_ml_domain(onnx_bytes, nodes_only=True) else []


def uses_ml_domain(onnx_bytes: bytes, *, nodes_only: bool = False) -> bool:
    """Whether a node of the model (or of a subgraph) is an ai.onnx.ml operator, or, unless
    nodes_only, the model declares that opset."""
    import onnx

    model = onnx.load_model_from_string(onnx_bytes)
    if not nodes_only and any(o.domain == "ai.onnx.ml" for o in model.opset_import):
        return True

    def walk(graph: onnx.GraphProto) -> bool:
        for node in graph.node:
            if node.domain == "ai.onnx.ml":
                return True
            for attribute in node.attribute:
                subgraphs = [attribute.g] if attribute.HasField("g") else []
                if any(walk(g) for g in [*subgraphs, *attribute.graphs]):
                    return True
        return False

    return walk(model.graph)

"""One ONNX Runtime session for one model version, on CUDA or CPU.

onnxruntime-gpu lists CUDAExecutionProvider as available even on a machine without a
usable GPU; only `session.get_providers()` says what a session really got, so that is what
we report as the device.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.errors import Unavailable
from service.registry.manifest import TensorSpec
from service.serving.tensors import ORT_TYPES

log = logging.getLogger(__name__)

GRAPH_OPTIMIZATIONS = {
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
EXECUTION_MODES = {
    "sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
    "parallel": ort.ExecutionMode.ORT_PARALLEL,
}
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@functools.cache
def cuda_driver_present() -> bool:
    """Whether the CUDA driver library loads: cheap, and avoids ORT's noisy failed attempt."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def providers_for(device: str) -> list[str]:
    if device == "cpu" or (device == "auto" and not cuda_driver_present()):
        return [CPU]
    return [CUDA, CPU]


class OnnxModel:
    """A loaded ONNX model; `run` is thread-safe (ORT sessions allow concurrent runs)."""

    def __init__(
        self,
        path: Path,
        *,
        device: str = "auto",
        intra_op_threads: int = 1,
        graph_optimization: str = "all",
        execution_mode: str = "sequential",
    ) -> None:
        # Measured on 2 cores: one intra-op thread, sequential execution and every graph
        # optimization, with a 2-thread executor sharing the session (run releases the
        # GIL); more threads than cores only adds tail latency.
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = EXECUTION_MODES[execution_mode]
        options.graph_optimization_level = GRAPH_OPTIMIZATIONS[graph_optimization]
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=providers_for(device)
            )
        except Exception as exc:  # ORT raises its own untyped errors for bad files
            raise Unavailable(f"model file {path.name} could not be loaded: {exc}") from exc
        self.providers = self.session.get_providers()
        self.device = "cuda" if CUDA in self.providers else "cpu"
        if device == "cuda" and self.device != "cuda":
            raise Unavailable(
                "serving device 'cuda' was configured but ONNX Runtime could not start CUDA "
                f"(providers in use: {self.providers})"
            )
        self.inputs = [_spec(node) for node in self.session.get_inputs()]
        self.outputs = [_spec(node) for node in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str]) -> list[np.ndarray]:
        return self.session.run(output_names, feeds)  # type: ignore[no-any-return]


def _spec(node: ort.NodeArg) -> TensorSpec:
    shape = tuple(dim if isinstance(dim, int) else -1 for dim in node.shape)
    return TensorSpec(name=node.name, datatype=ORT_TYPES.get(node.type, node.type), shape=shape)

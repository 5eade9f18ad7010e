"""One ONNX Runtime session for one model version, on CUDA or CPU.

onnxruntime-gpu lists CUDAExecutionProvider as available even on a machine without a
usable GPU; only `session.get_providers()` says what a session really got, so that is what
we report as the device.

On CUDA the inputs and outputs go through an I/O binding: ORT then copies each input to the
GPU once and each output back once, instead of letting every run allocate its own staging
buffers. A CPU session gains nothing from it (the arrays are used in place either way).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.datatypes import BY_ORT_TYPE, NotATensor, tensor_spec
from service.errors import Unavailable

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


#: What `providers_for` returns: provider names, or (name, options) pairs.
Providers = list[str | tuple[str, dict[str, str]]]


def providers_for(
    device: str,
    *,
    gpu_mem_limit_bytes: int = 0,
    arena_extend_strategy: str = "kSameAsRequested",
) -> Providers:
    """The providers to ask ORT for: CUDA with its arena options, then CPU as the fallback.

    CPU always comes last, so a CUDA session still has somewhere to run the nodes CUDA has
    no kernel for (the ai.onnx.ml operators of scikit-learn exports)."""
    if device == "cpu" or (device == "auto" and not cuda_driver_present()):
        return [CPU]
    options = {"arena_extend_strategy": arena_extend_strategy}
    # Our 0 means "no limit", which is ORT's own default (SIZE_MAX): leave the key out.
    if gpu_mem_limit_bytes:
        options["gpu_mem_limit"] = str(gpu_mem_limit_bytes)
    return [(CUDA, options), CPU]


_cuda_fallback_lock = threading.Lock()
_cuda_fallback_logged = False


def _log_cuda_not_used_once(device: str, providers: list[str]) -> None:
    """Says once per process why CUDA was asked for and not used: it is a property of the
    host, so one line per model would only repeat it (and bury other warnings)."""
    global _cuda_fallback_logged
    with _cuda_fallback_lock:
        if _cuda_fallback_logged:
            return
        _cuda_fallback_logged = True
    if not cuda_driver_present():
        reason = "no CUDA driver (libcuda.so.1 does not load)"
    else:
        reason = (
            "the CUDA driver loads but ONNX Runtime's CUDA provider did not start (CUDA or "
            "cuDNN libraries missing or of another version; ORT's own log line above says which)"
        )
    log.warning(
        "serving device %r asked for CUDA, but sessions run on %s: %s; ORT offers %s. "
        "Logged once; set PARADIGM_DEVICE=cpu to silence it",
        device, providers, reason, ort.get_available_providers(),
    )  # fmt: skip


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
        gpu_mem_limit_bytes: int = 0,
        arena_extend_strategy: str = "kSameAsRequested",
        io_binding: bool | None = None,
    ) -> None:
        """`io_binding`: None binds inputs and outputs on CUDA sessions only (where it saves
        copies), False never, True always (the CPU test of the code path)."""
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
                str(path),
                sess_options=options,
                providers=providers_for(
                    device,
                    gpu_mem_limit_bytes=gpu_mem_limit_bytes,
                    arena_extend_strategy=arena_extend_strategy,
                ),
            )
        except Exception as exc:  # ORT raises its own untyped errors for bad files
            raise Unavailable(f"model file {path.name} could not be loaded: {exc}") from exc
        self.providers = self.session.get_providers()
        self.device = "cuda" if CUDA in self.providers else "cpu"
        if self.device != "cuda" and (
            device == "cuda" or (device == "auto" and cuda_driver_present())
        ):
            _log_cuda_not_used_once(device, self.providers)
        if device == "cuda" and self.device != "cuda":
            # An explicit "cuda" is refused rather than served slowly on CPU; the reason is
            # in the log once, so this per-model message stays short.
            raise Unavailable(
                "serving device 'cuda' was configured but ONNX Runtime could not start CUDA"
            )
        self.io_binding = self.device == "cuda" if io_binding is None else io_binding
        try:
            self.inputs = [tensor_spec(node) for node in self.session.get_inputs()]
            self.outputs = [tensor_spec(node) for node in self.session.get_outputs()]
        except NotATensor as exc:
            # Export and import refuse such graphs; a file that got past them anyway is
            # as unservable as a corrupt one.
            raise Unavailable(f"model file {path.name} cannot be served: {exc}") from exc

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str]) -> list[np.ndarray]:
        if not self.io_binding:
            return self.session.run(output_names, feeds)  # type: ignore[no-any-return]
        # One binding per call: bindings hold per-run state, and runs are concurrent.
        binding = self.session.io_binding()
        for name, array in feeds.items():
            # ORT reads the buffer by pointer: it must be C-contiguous.
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in output_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()  # type: ignore[no-any-return]

    def warm_up(self) -> None:
        """Runs the model once on zeros at batch 1 (every free dim 1, strings ""), so that
        CUDA's lazy set-up (context, cuDNN handles, kernel choice) is not paid by the first
        request. Raises what the run raises; the caller decides that it is not fatal."""
        feeds = {node.name: _zeros(node) for node in self.session.get_inputs()}
        self.run(feeds, [spec.name for spec in self.outputs])


def _zeros(node: ort.NodeArg) -> np.ndarray:
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else 1 for dim in node.shape)
    datatype = BY_ORT_TYPE.get(node.type)
    if datatype is None:
        raise ValueError(f"cannot make a warm-up value for input {node.name} of {node.type}")
    if datatype.name == "BYTES":
        return np.full(shape, "", dtype=object)
    return np.zeros(shape, dtype=datatype.dtype)

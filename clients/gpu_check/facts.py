"""Device facts, and proof that ONNX Runtime really runs a model on CUDA (`make gpu-check`).

    python -m clients.gpu_check.facts            # prints the facts; exit 1 if CUDA fails

Checks that the `onnxruntime` imported is the GPU build (the carried onnxruntime-gpu, not
the image's CPU-only onnxruntime), that CUDAExecutionProvider is available, and that an
InferenceSession on a tiny model gets it first in its provider list and computes the right
answer on it. A session whose CUDA provider fails to load falls back to the CPU silently;
here that is a failure, with ONNX Runtime's own reason printed above it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from typing import Any

CUDA = "CUDAExecutionProvider"
PACKAGES = (
    "onnxruntime-gpu",
    "onnxruntime",
    "onnx",
    "torch",
    "numpy",
    "scipy",
    "scikit-learn",
    "skl2onnx",
    "skops",
    "grpcio",
    "protobuf",
    "pydantic",
    "pydantic-settings",
    "prometheus-client",
    "nvidia-ml-py",
    "hummingbird-ml",
    "pytest",
)


def _command(args: list[str]) -> str:
    if not shutil.which(args[0]):
        return f"({args[0]} not found)"
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    return (done.stdout + done.stderr).strip()


def device_facts() -> list[str]:
    lines = [
        f"date (UTC): {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"host: {platform.node()}  kernel: {platform.release()}  cpus: {os.cpu_count()}",
        f"python: {sys.version.split()[0]} at {sys.executable}",
        "nvidia-smi -L:",
        *("  " + line for line in _command(["nvidia-smi", "-L"]).splitlines()),
        "nvidia-smi (name, driver, memory, power limit):",
        *(
            "  " + line
            for line in _command(
                [
                    "nvidia-smi",
                    "--query-gpu=name,driver_version,memory.total,power.limit",
                    "--format=csv,noheader",
                ]
            ).splitlines()
        ),
    ]
    try:
        import torch

        lines.append(f"torch: {torch.__version__} (CUDA {torch.version.cuda})")
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            lines.append(
                f"torch.cuda.get_device_name: {torch.cuda.get_device_name(0)}"
                f" (capability {props.major}.{props.minor}, {props.multi_processor_count} SMs,"
                f" {props.total_memory / 2**30:.1f} GiB)"
            )
        else:
            lines.append("torch.cuda.is_available: False")
    except Exception as exc:  # facts are recorded, never fatal
        lines.append(f"torch: not importable ({exc!r})")
    lines.append("package versions (where each comes from):")
    for name in PACKAGES:
        try:
            dist = importlib.metadata.distribution(name)
            where = str(dist.locate_file(""))
            lines.append(f"  {name}=={dist.version}  [{where}]")
        except importlib.metadata.PackageNotFoundError:
            lines.append(f"  {name}: not installed")
    lines.append(f"PYTHONPATH={os.environ.get('PYTHONPATH', '')}")
    lines.append(f"LD_LIBRARY_PATH={os.environ.get('LD_LIBRARY_PATH', '')}")
    return lines


def _tiny_model() -> bytes:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.eye(256, dtype=np.float32) * 2, name="W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 256])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def ort_cuda_check() -> tuple[bool, list[str]]:
    """(ok, report): does an InferenceSession on a tiny model really run on CUDA?"""
    import numpy as np

    lines: list[str] = []
    try:
        import onnxruntime as ort
    except Exception as exc:
        return False, [f"FAIL onnxruntime is not importable: {exc!r}"]
    available = ort.get_available_providers()
    lines += [
        f"onnxruntime: {ort.__version__} from {os.path.dirname(ort.__file__)}",
        f"onnxruntime device: {ort.get_device()}",
        f"available providers: {available}",
    ]
    if CUDA not in available:
        lines.append(
            f"FAIL {CUDA} is not among the available providers: this onnxruntime is a CPU"
            " build (the image's plain onnxruntime?). The carried onnxruntime-gpu must come"
            " first on PYTHONPATH (/tmp/paradigm-site)."
        )
        return False, lines
    x = np.arange(4 * 256, dtype=np.float32).reshape(4, 256)

    def attempt() -> tuple[list[str], Any]:
        options = ort.SessionOptions()
        options.log_severity_level = 2  # warnings: ORT says why a provider failed to load
        session = ort.InferenceSession(
            _tiny_model(), options, providers=[CUDA, "CPUExecutionProvider"]
        )
        return session.get_providers(), session.run(None, {"x": x})[0]

    try:
        providers, y = attempt()
    except Exception as exc:
        lines.append(f"FAIL InferenceSession raised: {exc!r}")
        return False, lines
    lines.append(f"session providers: {providers}")
    if providers[0] == CUDA and np.allclose(y, 2 * x):
        lines.append("OK an InferenceSession ran the tiny model on CUDAExecutionProvider")
        return True, lines
    lines.append(
        "FAIL the session fell back to the CPU: ONNX Runtime could not load its CUDA provider"
        " (its reason is in the log above: usually libcudart/libcublas/libcudnn of CUDA 13 not"
        " found; LD_LIBRARY_PATH must hold the image's site-packages/nvidia/*/lib)."
    )
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
            providers, y = attempt()
            lines.append(f"after onnxruntime.preload_dlls(): session providers {providers}")
            if providers[0] == CUDA:
                lines.append(
                    "  -> CUDA works only after preload_dlls(): the service's runtime must call"
                    " it (or LD_LIBRARY_PATH must name the CUDA libraries) to use the GPU."
                )
        except Exception as exc:
            lines.append(f"onnxruntime.preload_dlls() did not help: {exc!r}")
    return False, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Device facts and the ORT CUDA check.")
    parser.add_argument("--no-ort", action="store_true", help="facts only")
    args = parser.parse_args(argv)
    for line in device_facts():
        print(line, flush=True)
    if args.no_ort:
        return 0
    print("\nONNX Runtime CUDA check:", flush=True)
    ok, report = ort_cuda_check()
    for line in report:
        print(line, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

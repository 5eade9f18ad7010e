"""What a report says about the machine it was measured on."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

# Packages whose versions move the numbers of a client-side measurement.
REPORTED_PACKAGES = ("grpcio", "protobuf", "onnxruntime-gpu", "onnxruntime", "numpy")


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo, or None where that does not say."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def machine_info() -> dict[str, Any]:
    """CPU, cores, platform, Python, package versions, git commit and load at the start."""
    versions = {}
    for package in REPORTED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    return {
        "cpu": cpu_model() or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": commit,
        "loadavg_start": list(os.getloadavg()),
    }

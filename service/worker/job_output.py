"""What a job leaves in its out_dir besides the manifest's own fields: model.onnx, its
checksum, and the provenance a manifest records (library versions, creation time)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from service.registry.manifest import MODEL_FILE

#: The libraries every trained or converted model's manifest records the versions of.
TRAIN_LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy")


def library_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """The installed version of each package (those not installed are left out)."""
    found = {}
    for package in packages:
        # onnxruntime-gpu installs the module onnxruntime under another distribution name.
        for distribution in (package, f"{package}-gpu"):
            try:
                found[package] = version(distribution)
                break
            except PackageNotFoundError:
                continue
    return found


def timestamp() -> str:
    """Now, as a manifest's created_at."""
    return datetime.now(UTC).isoformat()


def write_model(out_dir: Path, onnx_bytes: bytes) -> str:
    """Writes out_dir/model.onnx; its sha256, the manifest's checksum."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MODEL_FILE).write_bytes(onnx_bytes)
    return hashlib.sha256(onnx_bytes).hexdigest()

"""The `paradigm` CLI against a real server, run as a user runs it (a subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.server import RunningServer

CLI = str(Path(sys.executable).parent / "paradigm")


def paradigm(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "--target", server.target, *args],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def test_train_predict_export_through_the_cli(server: RunningServer, tmp_path: Path) -> None:
    listed = paradigm(server, "datasets")
    assert listed.returncode == 0 and "digits" in listed.stdout and "diabetes" in listed.stdout
    trained = paradigm(
        server, "train", "iris", "knn", "--name", "cli-knn", "--param", "n_neighbors=3",
        "--seed", "1",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "cli-knn" in trained.stdout and "accuracy" in trained.stdout
    models = paradigm(server, "models")
    assert "cli-knn" in models.stdout and "knn" in models.stdout

    rows = tmp_path / "rows.csv"
    rows.write_text("5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
    predicted = paradigm(server, "predict", "cli-knn", str(rows), "--out", str(tmp_path / "p.npy"))
    assert predicted.returncode == 0, predicted.stderr
    assert np.load(tmp_path / "p.npy").tolist() == [0, 2]

    exported = paradigm(server, "export", "cli-knn", str(tmp_path / "knn.onnx"))
    assert exported.returncode == 0 and (tmp_path / "knn.onnx").stat().st_size > 0


def test_cli_reports_server_errors_without_a_traceback(server: RunningServer) -> None:
    failed = paradigm(server, "train", "iris", "knn", "--param", "n_neighbors=0")
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: INVALID_ARGUMENT:")
    assert "n_neighbors" in failed.stderr and "Traceback" not in failed.stderr
    missing = paradigm(server, "models", "show", "nothing-here")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


def test_generate_and_delete_a_scale_dataset(server: RunningServer) -> None:
    made = paradigm(server, "datasets", "generate", "cli-scale", "--samples", "500", "--seed", "3")
    assert made.returncode == 0, made.stderr
    assert "500 samples of [28, 28] images" in made.stdout
    assert "cli-scale" in paradigm(server, "datasets").stdout
    deleted = paradigm(server, "datasets", "delete", "cli-scale")
    assert deleted.returncode == 0 and "cli-scale" not in paradigm(server, "datasets").stdout

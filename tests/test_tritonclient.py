"""tritonclient (Triton's own Python client) works against Paradigm unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from clients.client import ParadigmClient
from tests.server import RunningServer


def test_tritonclient_infers_unchanged(
    server: RunningServer, client: ParadigmClient, iris_model: str, tmp_path: Path
) -> None:
    rows = np.random.default_rng(0).uniform(0, 7, size=(9, 4)).astype(np.float32)
    np.save(tmp_path / "rows.npy", rows)
    completed = subprocess.run(
        [sys.executable, "-m", "tests.triton_probe", server.target, iris_model,
         str(tmp_path / "rows.npy")],
        capture_output=True, text=True, timeout=120, check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    answer = json.loads(completed.stdout)
    assert answer["live"] and answer["ready"] and answer["model_ready"]
    assert answer["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert answer["max_batch_size"] > 0
    ours = client.infer(iris_model, rows).as_numpy("label")
    assert answer["labels"] == ours.tolist()
    assert answer["missing_model_status"] == "StatusCode.NOT_FOUND"

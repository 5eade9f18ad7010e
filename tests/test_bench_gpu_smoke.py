"""`python -m clients.bench.gpu --quick --devices cpu` end to end, with tiny sizes.

Real servers, a real CNN job and real inference; the sizes only check that every figure
of results.json and report.md is produced (the full run is `make gpu-check` on a GPU).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from clients.bench import gpu


def test_cuda_devices_parse() -> None:
    assert gpu.build_parser().parse_args(["--out", "x", "--devices", "cpu,cuda"]).devices == [
        "cpu",
        "cuda",
    ]
    with pytest.raises(SystemExit):
        gpu.build_parser().parse_args(["--out", "x", "--devices", "tpu"])


def test_quick_cpu_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    argv = ["--out", str(out), "--quick", "--devices", "cpu", "--rows", "600",
            "--classical-rows", "200", "--requests", "2", "--warmup", "0"]  # fmt: skip
    assert gpu.main(argv) == 0

    results = json.loads((out / "results.json").read_text())
    cpu = results["devices"]["cpu"]
    assert cpu["name"] and "error" not in cpu
    training = cpu["training"]
    for key in ("fit_seconds", "epoch_seconds", "accuracy", "joules", "dollars"):
        assert isinstance(training[key], float) and training[key] > 0, key
    assert training["trained_on"] == "cpu" and training["energy_source"]

    points = {(p["algorithm"], p["batch"]): p for p in cpu["inference"]}
    algorithms = {algorithm for _, algorithm, _ in gpu.MODELS}
    assert set(points) == {(a, b) for a in algorithms for b in gpu.BATCHES}
    for point in points.values():
        assert 0 < point["p50_ms"] <= point["p99_ms"]
        assert point["rows_per_second"] > 0 and point["served_on"] == "cpu"

    assert set(cpu["cost_per_1k"]) == {"deep", "classical"}
    for cost in cpu["cost_per_1k"].values():
        assert cost["predictions"] > 0
        assert math.isfinite(cost["joules_per_1k"]) and cost["joules_per_1k"] > 0
        assert math.isfinite(cost["dollars_per_1k"]) and cost["dollars_per_1k"] > 0

    report = (out / "report.md").read_text()
    assert "| device | fit s | epoch s |" in report
    assert "| device | model | paradigm | batch | p50 ms | p99 ms | rows/s |" in report
    assert "| device | paradigm | predictions | joules / 1k | dollars / 1k |" in report
    assert cpu["name"] in report
    assert "| cpu | cnn | deep | 1024 |" in report

"""CI smoke test of the benchmark driver: a --quick run end to end, plus its argument parsers.

The quick run starts our server (batching on, then off), the bare server and a cold-start
server of its own, trains logistic regression on digits and drives each server for about a
second: ~25 s on 2 cores. It proves the pieces fit together (load generator, probes, JSON,
table, plot), not any speed: CI machines are too noisy for thresholds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from clients import cli
from clients.bench import run
from clients.bench.load import InputSpec


def test_quick_run_writes_json_table_and_plot(tmp_path: Path) -> None:
    code = run.main(
        [
            "--quick", "--out", str(tmp_path), "--paradigms", "classical",
            "--concurrency-classical", "2", "--cold-start-models", "2",
        ]
    )  # fmt: skip
    assert code == 0
    [report_file] = tmp_path.glob("bench-*.json")
    report = json.loads(report_file.read_text())

    servers = {point["server"] for point in report["points"]}
    assert servers == {
        run.OURS, run.OURS_NO_BATCHING, run.OURS_REST_BINARY, run.OURS_REST_JSON, run.BARE,
    }  # fmt: skip
    for point in report["points"]:
        assert point["throughput_rps"] > 0, point
        assert point["errors"] == {}, point
        assert point["concurrency"] == 2
        assert point["latency_ms"]["p50"] > 0
        assert point["client_cpu_s_per_s"] > 0
        # The first answer carried the model's outputs back as tensors.
        assert point["response_outputs"]["label"] == [1]
    ours = next(p for p in report["points"] if p["server"] == run.OURS)
    assert ours["observed"]["server_cpu_s_per_s"] > 0
    assert ours["observed"]["effective_batch"] >= 1

    assert report["inprocess"]["classical"][0]["batch"] == 1
    assert report["inprocess"]["classical"][0]["median_us"] > 0
    assert report["cold_start"]["models"] == 2
    assert 0 < report["cold_start"]["serving_s"] <= report["cold_start"]["all_models_ready_s"]
    assert {t["status"] for t in report["targets"]} <= {"PASS", "MISS", "n/a"}
    assert report["machine"]["cores"] >= 1

    assert (tmp_path / "bench-classical.png").read_bytes().startswith(b"\x89PNG")
    table = (tmp_path / "bench.md").read_text()
    assert "| classical | Paradigm (batching on) | 2 |" in table
    assert "| classical | Paradigm REST binary (batching on) | 2 |" in table
    assert "## Targets" in table
    assert any(t["name"].startswith("classical REST binary / gRPC") for t in report["targets"])


def test_peer_and_input_specs_parse() -> None:
    assert run.parse_peer("mlserver=127.0.0.1:8081:digits-lr") == (
        "mlserver", "127.0.0.1:8081", "digits-lr", "classical",
    )  # fmt: skip
    assert run.parse_peer("t=h:1:cnn:deep")[3] == "deep"
    with pytest.raises(argparse.ArgumentTypeError):
        run.parse_peer("mlserver=127.0.0.1:digits-lr")
    spec = InputSpec.parse("input:fp32:1x784")
    assert spec == InputSpec("input", "FP32", (1, 784))
    assert str(spec) == "input:FP32:1x784"
    with pytest.raises(ValueError):
        InputSpec.parse("input:FP33:1x4")


def test_paradigm_bench_forwards_to_the_driver(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["bench", "--help"])
    assert exited.value.code == 0
    assert "--target-ours" in capsys.readouterr().out

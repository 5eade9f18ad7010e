"""`make gpu-wheels` / `make gpu-check` pieces that run without a GPU (docs/gpu.md).

Nothing here downloads: the split/pack/reassemble round trip runs on synthetic files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clients.gpu_check import classical_gpu, facts, wheels

ROOT = Path(__file__).resolve().parent.parent
KiB = 1024


def _synthetic(source: Path) -> dict[str, bytes]:
    source.mkdir(parents=True)
    contents = {
        "big-1.0-py3-none-any.whl": os.urandom(2500 * KiB),  # > one carry: split
        "mid-1.0-py3-none-any.whl": os.urandom(600 * KiB),
        "small-1.0-py3-none-any.whl": os.urandom(100 * KiB),
        "tiny-1.0-py3-none-any.whl": b"x",
    }
    for name, data in contents.items():
        (source / name).write_bytes(data)
    return contents


def test_pack_splits_large_files_and_keeps_every_carry_under_its_limit(tmp_path: Path) -> None:
    contents = _synthetic(tmp_path / "download")
    carry_bytes = 1024 * KiB
    entries = wheels.pack(tmp_path / "download", tmp_path, carry_bytes)

    carries = sorted(tmp_path.glob("carry-*"))
    total = sum(len(d) for d in contents.values())
    assert len(carries) == -(-total // (carry_bytes - 64 * KiB))  # the least that fits
    for carry in carries:
        assert sum(p.stat().st_size for p in carry.iterdir()) <= carry_bytes
        manifest = json.loads((carry / wheels.MANIFEST).read_text())
        assert manifest["carries"] == len(carries)
    big = next(e for e in entries if e.name.startswith("big"))
    assert len(big.parts) >= 3
    assert len({p.carry for p in big.parts}) == len(big.parts)
    assert all(p.name.startswith(f"{big.name}.part-") for p in big.parts)


def test_reassemble_round_trip_and_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    contents = _synthetic(tmp_path / "download")
    wheels.pack(tmp_path / "download", tmp_path, 1024 * KiB)
    # As on the device: the carries copied one by one into another folder.
    device = tmp_path / "device"
    for carry in tmp_path.glob("carry-*"):
        shutil.copytree(carry, device / carry.name)
    out = tmp_path / "whole"
    assert wheels.reassemble([device], out) == []
    for name, data in contents.items():
        assert (out / name).read_bytes() == data
    assert not list(out.glob(".*"))  # no partial files left

    assert wheels.main(["--check", "--dir", str(tmp_path)]) == 0
    assert "0 problems" in capsys.readouterr().out


def test_reassemble_names_the_missing_carry_and_a_corrupt_part(tmp_path: Path) -> None:
    _synthetic(tmp_path / "download")
    entries = wheels.pack(tmp_path / "download", tmp_path, 1024 * KiB)
    big = next(e for e in entries if e.name.startswith("big"))
    lost = big.parts[1]
    shutil.rmtree(tmp_path / f"carry-{lost.carry}")
    problems = wheels.reassemble([tmp_path], tmp_path / "whole")
    assert any(big.name in p and f"carry-{lost.carry}" in p for p in problems)
    assert not (tmp_path / "whole" / big.name).exists()

    wheels.pack(tmp_path / "download", tmp_path, 1024 * KiB)
    part = tmp_path / f"carry-{lost.carry}" / lost.name
    part.write_bytes(b"\0" + part.read_bytes()[1:])
    problems = wheels.reassemble([tmp_path], tmp_path / "whole2")
    assert any("sha256" in p for p in problems)
    assert wheels.main(["--check", "--dir", str(tmp_path)]) == 1


def test_run_calls_carry_one_folder_each_and_end_with_the_check() -> None:
    calls = wheels.run_calls(3)
    assert len(calls) == 3
    args = [json.loads(c.removeprefix("run ")) for c in calls]
    assert [a["carry"] for a in args] == [[f".gpu-wheels/carry-{k}"] for k in (1, 2, 3)]
    assert all("cp -r .gpu-wheels/carry-" in a["command"] for a in args)
    assert "make gpu-check" in args[-1]["command"]
    assert "clients/gpu_check/run.sh" in args[-1]["command"]  # where the image lacks make
    assert all(len(a["command"]) <= 2000 for a in args)


def test_pins_are_exact_and_never_torch() -> None:
    for pin in wheels.CORE_PINS + wheels.HUMMINGBIRD_PINS:
        name, _, version = pin.partition("==")
        assert name and version, pin
        assert name != "torch"
    assert "onnxruntime-gpu==1.31.1" in wheels.CORE_PINS


def test_run_sh_parses() -> None:
    subprocess.run(["bash", "-n", str(ROOT / "clients/gpu_check/run.sh")], check=True)


def test_facts_record_the_versions(capsys: pytest.CaptureFixture[str]) -> None:
    assert facts.main(["--no-ort"]) == 0
    out = capsys.readouterr().out
    assert "python:" in out
    assert "onnxruntime" in out


def test_ort_cuda_check_fails_loudly_or_proves_cuda() -> None:
    ok, report = facts.ort_cuda_check()
    text = "\n".join(report)
    if ok:
        assert "OK an InferenceSession ran the tiny model on CUDAExecutionProvider" in text
    else:
        assert any(line.startswith("FAIL ") for line in report), text


def test_classical_quick_runs_on_the_cpu_without_hummingbird(tmp_path: Path) -> None:
    out = tmp_path / "classical-gpu.md"
    script = "import sys; sys.modules['hummingbird'] = None; sys.modules['hummingbird.ml'] = None\n"
    script += "from clients.gpu_check.classical_gpu import main\n"
    script += f"raise SystemExit(main(['--quick', '--out', {str(out)!r}]))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "hummingbird not installed" in text
    assert "| n/a |" in text  # no hummingbird figures, only ORT CPU
    for batch in classical_gpu.BATCHES:
        assert f"| {batch} |" in text
    assert "stays on CPU" in text

"""service/gen must be exactly what `make proto` makes from protos/ today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "protos" / "generate.py")
    assert spec and spec.loader
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    generate.generate(tmp_path)
    fresh = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*.py*")}
    checked_in = {
        p.relative_to(ROOT / "service" / "gen"): p.read_text()
        for p in (ROOT / "service" / "gen").rglob("*.py*")
        if "__pycache__" not in p.parts
    }
    assert fresh.keys() == checked_in.keys()
    stale = [str(path) for path, text in fresh.items() if checked_in[path] != text]
    assert not stale, f"run `make proto`: stale {stale}"

"""The soak (clients/soak.py) in a short form: its own server, 64 clients predicting on a
classical and a deep model for 15 s while a training job and a model import run beside
them. Zero errors, no memory growth past 10 %, no descriptor leak. About 30 s."""

from __future__ import annotations

import json
from pathlib import Path

from clients import soak


def test_short_soak_has_no_errors_and_no_leaks(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    # 20 s: an import job takes up to ~13 s on 2 busy cores, and the RSS check needs the
    # samples after the warm-up (every path run once) as well.
    code = soak.main(["--duration", "20", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["errors"] == {}, report["error_examples"]
    requests = report["requests"]
    assert requests["predict classical"] > 0 and requests["predict deep"] > 0
    # Every kind of work ran at least once beside the predictions.
    assert all(requests[kind] >= 1 for kind in ("train", "export", "import", "delete"))
    rss, fds = report["rss_mib"], report["fds"]
    assert rss["growth_pct"] < 10, rss
    assert fds["after"] - fds["before"] <= fds["slack"], fds
    assert report["passed"] and code == 0

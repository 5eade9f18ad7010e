"""`python -m clients.cost_snapshot`: what each paradigm costs, as Prometheus reports it.

Queries a Prometheus that scrapes a Paradigm server (with deploy/prometheus/rules loaded)
and prints per-paradigm, per-device figures as a markdown table: latency percentiles,
device-seconds, joules and dollars per 1 000 predictions, and training cost per job.
Figures are over the last --window (default 10m), so run it right after the traffic.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.parse
import urllib.request
from collections.abc import Sequence

SERVE = 'sum by (paradigm, device) (increase({metric}{phase="serve"}[{window}]))'
PREDICTIONS = "sum by (paradigm, device) (increase(paradigm_predictions_total[{window}]))"
QUANTILE = (
    "histogram_quantile({q}, sum by (le, paradigm, device) "
    "(increase(paradigm_inference_duration_seconds_bucket[{window}])))"
)
TRAIN = (
    'sum by (paradigm, device) ({metric}{phase="train"}) / ignoring(device) group_left '
    "sum by (paradigm) (paradigm_training_jobs_total)"
)
COLUMNS: dict[str, str] = {
    "p50 ms": QUANTILE.replace("{q}", "0.5"),
    "p99 ms": QUANTILE.replace("{q}", "0.99"),
    "predictions": PREDICTIONS,
    "dev-s / 1k": f"1000 * {SERVE.replace('{metric}', 'paradigm_device_seconds_total')} / "
    f"{PREDICTIONS}",
    "J / 1k": f"1000 * {SERVE.replace('{metric}', 'paradigm_energy_joules_total')} / {PREDICTIONS}",
    "$ / 1k": f"1000 * {SERVE.replace('{metric}', 'paradigm_cost_dollars_total')} / {PREDICTIONS}",
    "train dev-s / job": TRAIN.replace("{metric}", "paradigm_device_seconds_total"),
    "train J / job": TRAIN.replace("{metric}", "paradigm_energy_joules_total"),
    "train $ / job": TRAIN.replace("{metric}", "paradigm_cost_dollars_total"),
}
SCALE = {"p50 ms": 1000.0, "p99 ms": 1000.0}


def query(prometheus: str, expr: str) -> list[tuple[dict[str, str], float]]:
    url = f"{prometheus.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=30) as answer:
        body = json.load(answer)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]


def number(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def snapshot(prometheus: str, window: str) -> tuple[list[str], list[list[str]], list[str]]:
    table: dict[tuple[str, str], dict[str, float]] = {}
    sources = sorted(
        {
            f"{m['device']}: {m['source']}"
            for m, _ in query(prometheus, "paradigm_energy_source_info")
        }
    )
    for column, template in COLUMNS.items():
        for labels, value in query(prometheus, template.replace("{window}", window)):
            key = (labels.get("paradigm", "?"), labels.get("device", "?"))
            table.setdefault(key, {})[column] = value * SCALE.get(column, 1.0)
    headers = ["paradigm", "device", *COLUMNS]
    rows = [
        [paradigm, device, *(number(values.get(c)) for c in COLUMNS)]
        for (paradigm, device), values in sorted(table.items())
    ]
    return headers, rows, sources


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.cost_snapshot", description=__doc__)
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--window", default="10m", help="PromQL range for serving figures")
    args = parser.parse_args(argv)
    try:
        headers, rows, sources = snapshot(args.prometheus, args.window)
    except (OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nenergy source: {', '.join(sources) or 'unknown'}; serving window {args.window}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

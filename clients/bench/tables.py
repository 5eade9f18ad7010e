"""Tables benchmark: ingesting a big mixed CSV, and serving per-column models.

`python -m clients.bench.tables` (or `make bench-tables`), in one run on one machine:

1. Ingestion. A generated CSV of ROWS rows x 20 mixed columns (numbers with blanks, words,
   yes/no, a named label; ~100 MB) is uploaded to a real server: seconds from the first
   byte sent to the dataset being ready, and the serving process's RSS before and its peak
   after (VmHWM), against pyarrow.csv.read_csv and pandas.read_csv of the same file in this
   process. Targets: our throughput >= 0.5x pyarrow's read (the library's own limit) and
   >= 2x pandas'; serving RSS grows by less than the file's size.
2. Serving. A logistic regression on a 20-column mixed table (one input per column, words
   as BYTES) against one on a 20-column all-numeric table (one FP32 [n, 20] input): p50
   latency at batch 1 and 256, requests built once so the client's encoding is not timed.
   Target: per-column tensors cost a row at most 2x at batch 256.
3. Scores. Every classification algorithm of the catalog trained on the built-in penguins
   table (words, blanks, named species) through the server: held-out accuracy and F1, and
   the parity error of its one ONNX graph from raw columns to class names.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from clients.client import ParadigmClient, make_infer_request
from clients.columns import column_inputs
from clients.harness import paradigm_server
from clients.machine import machine_info

ROWS = 1_000_000
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


def mixed_table(rows: int, seed: int = 0) -> pa.Table:
    """20 columns: 10 numbers (5 % blank), 6 word columns (3-40 values, 2 % blank), 2 yes/no,
    an integer, and a named label that depends on a few of them."""
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for i in range(10):
        values = rng.normal(i, 1 + i, rows).round(3)
        values[rng.random(rows) < 0.05] = np.nan
        columns[f"x{i}"] = pa.array(values, from_pandas=True)
    for i, cardinality in enumerate((3, 5, 8, 12, 20, 40)):
        vocabulary = np.array([f"{WORDS[j % len(WORDS)]}-{j}" for j in range(cardinality)])
        words = vocabulary[rng.integers(0, cardinality, rows)].astype(object)
        words[rng.random(rows) < 0.02] = None
        columns[f"c{i}"] = pa.array(list(words), pa.string())
    for i in range(2):
        columns[f"flag{i}"] = np.where(rng.random(rows) < 0.5, "yes", "no")
    columns["count"] = rng.integers(0, 50, rows)
    score = (
        np.nan_to_num(columns["x0"].to_numpy(zero_copy_only=False))
        + (np.asarray(columns["c0"].to_pylist(), dtype=object) == "alpha-0") * 2.0
    )
    columns["label"] = np.where(score > 1.5, "high", np.where(score > -0.5, "mid", "low"))
    return pa.table(columns)


def numeric_table(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns = {f"x{i}": rng.normal(i, 1 + i, rows).round(3) for i in range(19)}
    columns["label"] = np.where(columns["x0"] > 0.5, 1, 0)
    return pa.table(columns)


def write_csv(table: pa.Table, path: Path) -> Path:
    pa_csv.write_csv(table, path)
    return path


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def ingestion(workdir: Path, rows: int) -> dict[str, Any]:
    csv = write_csv(mixed_table(rows), workdir / "mixed.csv")
    size = csv.stat().st_size
    started = time.perf_counter()
    pa_csv.read_csv(csv)
    pyarrow_s = time.perf_counter() - started
    import pandas as pd

    started = time.perf_counter()
    pd.read_csv(csv)
    pandas_s = time.perf_counter() - started
    with (
        paradigm_server(workdir, "ingest-server", workdir / "data", metrics=False) as server,
        ParadigmClient(server.target, timeout=600) as client,
    ):
        rss_before = rss_kib(server.pid, "VmRSS")
        started = time.perf_counter()
        dataset = client.upload_dataset("mixed", csv, label_column="label")
        ours_s = time.perf_counter() - started
        rss_peak = rss_kib(server.pid, "VmHWM")
    mib = size / 2**20
    return {
        "rows": rows,
        "columns": len(dataset.columns) + 1,
        "file_mib": round(mib, 1),
        "ours_upload_to_ready_s": round(ours_s, 3),
        "pyarrow_read_csv_s": round(pyarrow_s, 3),
        "pandas_read_csv_s": round(pandas_s, 3),
        "ours_mib_per_s": round(mib / ours_s, 1),
        "pyarrow_mib_per_s": round(mib / pyarrow_s, 1),
        "pandas_mib_per_s": round(mib / pandas_s, 1),
        "throughput_vs_pyarrow": round(pyarrow_s / ours_s, 3),
        "throughput_vs_pandas": round(pandas_s / ours_s, 3),
        "server_rss_before_mib": round(rss_before / 1024, 1),
        "server_rss_peak_mib": round(rss_peak / 1024, 1),
        "server_rss_growth_mib": round((rss_peak - rss_before) / 1024, 1),
        "kinds": {c.name: c.kind for c in dataset.columns},
    }


def serving(workdir: Path, calls: int) -> dict[str, Any]:
    mixed = write_csv(mixed_table(20_000, seed=1), workdir / "serve-mixed.csv")
    numeric = write_csv(numeric_table(20_000, seed=1), workdir / "serve-numeric.csv")
    results: dict[str, Any] = {}
    with (
        paradigm_server(workdir, "serve-server", workdir / "serve-data", metrics=False) as server,
        ParadigmClient(server.target, timeout=600) as client,
    ):
        client.upload_dataset("mixed20", mixed, label_column="label")
        client.upload_dataset("numeric20", numeric, label_column="label")
        for dataset in ("mixed20", "numeric20"):
            job = client.start_training(dataset, "logistic_regression", model_name=dataset)
            client.wait_for_job(job.id)
        rows = mixed_table(256, seed=2)
        for name in ("mixed20", "numeric20"):
            metadata = client.model_metadata(name)
            for batch in (1, 256):
                part = rows.slice(0, batch)
                if name == "mixed20":
                    tensors: Any = column_inputs(part, metadata.inputs).tensors
                else:
                    values = np.random.default_rng(3).normal(size=(batch, 19)).astype(np.float32)
                    tensors = {"input": values}
                request = make_infer_request(name, tensors)
                stub = client._inference  # the raw stub: the request is already built
                for _ in range(min(50, calls)):
                    stub.ModelInfer(request)
                latencies = []
                for _ in range(calls if batch == 1 else max(calls // 4, 20)):
                    started = time.perf_counter()
                    stub.ModelInfer(request)
                    latencies.append(time.perf_counter() - started)
                p50 = statistics.median(latencies)
                results[f"{name}_b{batch}_p50_ms"] = round(p50 * 1e3, 3)
                results[f"{name}_b{batch}_us_per_row"] = round(p50 * 1e6 / batch, 2)
    for batch in (1, 256):
        results[f"mixed_vs_numeric_per_row_b{batch}"] = round(
            results[f"mixed20_b{batch}_us_per_row"] / results[f"numeric20_b{batch}_us_per_row"], 2
        )
    return results


SCORED = (
    "logistic_regression", "decision_tree", "random_forest", "gradient_boosting", "svm",
    "naive_bayes", "knn", "mlp",
)  # fmt: skip


def scores(workdir: Path) -> list[dict[str, Any]]:
    rows = []
    with (
        paradigm_server(workdir, "score-server", workdir / "score-data", metrics=False) as server,
        ParadigmClient(server.target, timeout=600) as client,
    ):
        for algorithm in SCORED:
            job = client.wait_for_job(
                client.start_training("penguins", algorithm, model_name=f"penguins-{algorithm}").id
            )
            model = client.get_model(job.model_name)
            rows.append(
                {
                    "algorithm": algorithm,
                    "paradigm": "deep" if algorithm == "mlp" else "classical",
                    "accuracy": round(job.metrics["accuracy"], 4),
                    "f1_macro": round(job.metrics["f1_macro"], 4),
                    "parity_max_abs_error": float(f"{model.parity_max_abs_error:.3g}"),
                    "fit_seconds": round(job.metrics["fit_seconds"], 3),
                    "inputs": len(client.model_metadata(job.model_name).inputs),
                }
            )
    return rows


def markdown(report: dict[str, Any]) -> str:
    i, s = report["ingestion"], report["serving"]
    lines = [
        "# Tables: ingestion and per-column serving",
        "",
        f"`python -m clients.bench.tables` on {report['machine']['cpu']} "
        f"({report['machine']['cores']} cores), {report['when']}.",
        "",
        f"## Ingestion: {i['rows']:,} rows x {i['columns']} mixed columns, {i['file_mib']} MiB CSV",
        "",
        "| reader | seconds | MiB/s | ours vs it |",
        "|---|---:|---:|---:|",
        f"| Paradigm upload to ready (gRPC stream, worker parse, Parquet, schema) | "
        f"{i['ours_upload_to_ready_s']} | {i['ours_mib_per_s']} | 1 |",
        f"| pyarrow.csv.read_csv in-process | {i['pyarrow_read_csv_s']} | "
        f"{i['pyarrow_mib_per_s']} | {i['throughput_vs_pyarrow']} |",
        f"| pandas.read_csv in-process | {i['pandas_read_csv_s']} | {i['pandas_mib_per_s']} | "
        f"{i['throughput_vs_pandas']} |",
        "",
        f"Serving process RSS: {i['server_rss_before_mib']} MiB before, peak "
        f"{i['server_rss_peak_mib']} MiB (+{i['server_rss_growth_mib']} MiB; the file is "
        f"{i['file_mib']} MiB).",
        "",
        "## Serving: logistic regression, 20 columns, p50 per request",
        "",
        "| model | batch 1 ms | batch 256 ms | µs per row at 256 |",
        "|---|---:|---:|---:|",
        f"| mixed: one input per column (11 FP32, 8 BYTES) | {s['mixed20_b1_p50_ms']} | "
        f"{s['mixed20_b256_p50_ms']} | {s['mixed20_b256_us_per_row']} |",
        f"| all-numeric: one FP32 [n, 19] input | {s['numeric20_b1_p50_ms']} | "
        f"{s['numeric20_b256_p50_ms']} | {s['numeric20_b256_us_per_row']} |",
        "",
        f"Per-row cost, mixed / numeric: {s['mixed_vs_numeric_per_row_b1']}x at batch 1, "
        f"{s['mixed_vs_numeric_per_row_b256']}x at batch 256.",
        "",
        "## Held-out scores on penguins (7 inputs: 5 numbers, 2 word columns; blanks)",
        "",
        "| algorithm | paradigm | accuracy | F1 macro | parity max abs error | fit s |",
        "|---|---|---:|---:|---:|---:|",
        *(
            f"| {r['algorithm']} | {r['paradigm']} | {r['accuracy']} | {r['f1_macro']} | "
            f"{r['parity_max_abs_error']:g} | {r['fit_seconds']} |"
            for r in report["scores"]
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paradigm-tables-") as tmp:
        workdir = Path(tmp)
        report = {
            "machine": machine_info(),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "ingestion": ingestion(workdir, args.rows),
            "serving": serving(workdir, args.calls),
            "scores": scores(workdir),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tables-cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "tables-cpu.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

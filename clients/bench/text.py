"""Text benchmark: what tokenising inside the served graph costs.

`python -m clients.bench.text`: a real server trains three models of the generated reviews
(a text column only): logistic regression on TF-IDF, mlp on mean word vectors, lstm over
the words. Each served graph takes raw strings and tokenises inside. Its network part (the
graph from the preprocessing output "features" on, cut out with onnx.utils) is imported
as a second model that takes the precomputed features (TF-IDF weights or token ids), and
both are timed through gRPC at batch 1 and 64 (p50, requests built once), and in this
process on ONNX Runtime with one thread, where the difference is the tokenisation itself.
The issue's target: tokenising costs less than the model at batch 64.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from clients.bench.reviews import reviews
from clients.client import ParadigmClient, make_infer_request
from clients.harness import paradigm_server
from clients.machine import machine_info

MODELS = {
    "text-lr": ("logistic_regression", {}),
    "text-mlp": ("mlp", {"epochs": 10}),
    "text-lstm": ("lstm", {"epochs": 10}),
}
BATCHES = (1, 64)
FEATURES = "features"


def _p50_ms(call: Callable[[], Any], calls: int) -> float:
    for _ in range(min(50, calls)):
        call()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1e3, 4)


def _network_part(model_onnx: Path, out: Path) -> Path:
    """The served graph from its preprocessing output on: the model fed precomputed features."""
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(model_onnx)
    outputs = [o.name for o in model.graph.output]
    onnx.save(Extractor(model).extract_model([FEATURES], outputs), out)
    return out


def _preprocessing_part(model_onnx: Path, out: Path) -> Path:
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(model_onnx)
    inputs = [i.name for i in model.graph.input]
    onnx.save(Extractor(model).extract_model(inputs, [FEATURES]), out)
    return out


def run(workdir: Path, rows: int, calls: int) -> dict[str, Any]:
    import onnxruntime as ort

    data = reviews(rows, seed=1)
    csv = workdir / "reviews.csv"
    pa_csv.write_csv(pa.table({"review": data["review"], "sentiment": data["sentiment"]}), csv)
    texts = np.array(
        [[text or ""] for text in reviews(max(BATCHES), seed=2)["review"]], dtype=object
    )
    data_dir = workdir / "data"
    results: dict[str, Any] = {
        "rows": rows,
        "mean_words": round(float(np.mean([len(str(t[0]).split()) for t in texts])), 1),
    }
    with (
        paradigm_server(workdir, "text-server", data_dir, metrics=False) as server,
        ParadigmClient(server.target, timeout=600) as client,
    ):
        client.upload_dataset("reviews", csv, label_column="sentiment")
        for name, (algorithm, params) in MODELS.items():
            job = client.wait_for_job(
                client.start_training(
                    "reviews", algorithm, model_name=name, seed=0, hyperparameters=params
                ).id
            )
            served = next((data_dir / "models" / name).glob("*/model.onnx"))
            network = _network_part(served, workdir / f"{name}-network.onnx")
            front = _preprocessing_part(served, workdir / f"{name}-front.onnx")
            imported = client.wait_for_job(
                client.import_model(f"{name}-features", network, format="onnx").id
            )
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            sessions = {
                part: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for part, path in (("whole", served), ("network", network), ("front", front))
            }
            row: dict[str, Any] = {
                "algorithm": algorithm,
                "accuracy": round(job.metrics["accuracy"], 4),
                "parity_max_abs_error": client.get_model(name).parity_max_abs_error,
                "import_state": imported.state,
            }
            for batch in BATCHES:
                raw = {"review": texts[:batch]}
                features = sessions["front"].run(None, raw)[0]
                for label, model, inputs in (
                    ("raw", name, raw),
                    ("features", f"{name}-features", {FEATURES: features}),
                ):
                    request = make_infer_request(model, inputs)
                    stub = client._inference  # the raw stub: the request is already built
                    row[f"grpc_{label}_b{batch}_ms"] = _p50_ms(
                        functools.partial(stub.ModelInfer, request), calls
                    )
                for part in ("whole", "network", "front"):
                    feeds = {FEATURES: features} if part == "network" else raw
                    session = sessions[part]
                    row[f"ort_{part}_b{batch}_ms"] = _p50_ms(
                        functools.partial(session.run, None, feeds), calls
                    )
                row[f"tokenise_vs_model_b{batch}"] = round(
                    row[f"ort_front_b{batch}_ms"] / row[f"ort_network_b{batch}_ms"], 3
                )
            results[name] = row
    return results


def markdown(report: dict[str, Any]) -> str:
    r = report["results"]
    lines = [
        "# Text: tokenising inside the served graph",
        "",
        f"`python -m clients.bench.text` on {report['machine']['cpu']} "
        f"({report['machine']['cores']} cores), {report['when']}; {r['rows']} generated "
        f"reviews, {r['mean_words']} words on average. p50 ms per request.",
        "",
        "| model | batch | gRPC raw strings | gRPC precomputed features | ORT whole graph | "
        "ORT tokenise (front) | ORT model (network) | tokenise / model |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in MODELS:
        row = r[name]
        for batch in BATCHES:
            lines.append(
                f"| {name} ({row['algorithm']}) | {batch} | {row[f'grpc_raw_b{batch}_ms']} | "
                f"{row[f'grpc_features_b{batch}_ms']} | {row[f'ort_whole_b{batch}_ms']} | "
                f"{row[f'ort_front_b{batch}_ms']} | {row[f'ort_network_b{batch}_ms']} | "
                f"{row[f'tokenise_vs_model_b{batch}']} |"
            )
    lines += [
        "",
        "Held-out accuracy / parity: "
        + "; ".join(f"{n} {r[n]['accuracy']} / {r[n]['parity_max_abs_error']:.2g}" for n in MODELS),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None, help="write text.json and text.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paradigm-text-") as tmp:
        report = {
            "machine": machine_info(),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "results": run(Path(tmp), args.rows, args.calls),
        }
    text = markdown(report)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "text.json").write_text(json.dumps(report, indent=2))
        (args.out / "text.md").write_text(text)


if __name__ == "__main__":
    main()

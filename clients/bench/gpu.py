"""`python -m clients.bench.gpu --out DIR [--quick] [--devices cpu,cuda]`: GPU against CPU.

For each device in --devices this starts a real server (paradigm-server on free ports, a
fresh data directory, PARADIGM_DEVICE=<device>, dynamic batching off so a point measures
one request on the provider and not the batching window), and on it:

- generates the 28x28 scale dataset (service/datasets/scale.py: 60 000 rows; --quick a
  few thousand) and trains the guide's CNN (`cnn`, catalog defaults, seed 0; --quick 1
  epoch) on that device: fit seconds, mean epoch seconds, accuracy, and the job's joules
  and dollars from the CostService (NVML's energy counter on a GPU, RAPL or an estimate
  on a CPU: the source is reported);
- trains two classical models on the same data (logistic_regression, gradient_boosting; on
  the CPU, as scikit-learn does, on at most --classical-rows rows) and serves all three on
  the server's provider (CUDA or CPU), timing closed-loop batches of 1, 64 and 1024 rows:
  latency p50/p99 and rows per second, a bounded number of requests per point;
- scrapes the server's Prometheus endpoint before and after each paradigm's inference:
  paradigm_energy_joules_total / paradigm_cost_dollars_total (phase "serve") and
  paradigm_predictions_total give joules and dollars per 1 000 predictions.

cuda is skipped, with a note in the report, when the machine has no NVIDIA GPU or
ONNX Runtime has no CUDA provider. Writes results.json and report.md into --out.

    python -m clients.bench.gpu --out /tmp/gpu --devices cpu,cuda   # the full run
    python -m clients.bench.gpu --out /tmp/gpu --quick --devices cpu  # seconds, for CI
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from clients.cli import format_markdown
from clients.client import JobFailed, ParadigmClient, ParadigmClientError
from clients.harness import paradigm_server
from clients.machine import machine_info

DEVICES = ("cpu", "cuda")
DATASET = "gpu-bench-scale"
IMAGE_SIDE = 28
CNN = "gpu-bench-cnn"
#: (model name, algorithm, paradigm) of every model served.
MODELS = (
    (CNN, "cnn", "deep"),
    ("gpu-bench-lr", "logistic_regression", "classical"),
    ("gpu-bench-gb", "gradient_boosting", "classical"),
)
BATCHES = (1, 64, 1024)


# -- the device under test ------------------------------------------------------------------


def cuda_unavailable_reason() -> str | None:
    """Why cuda cannot be benchmarked here, or None when it can."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver (libcuda.so.1) on this machine"
    try:
        import onnxruntime
    except ImportError:  # pragma: no cover - a dependency of the project
        return "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return "ONNX Runtime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    return None


def device_name(device: str, machine: Mapping[str, Any]) -> str:
    """The GPU's name from NVML for cuda; the CPU model (and cores) for cpu."""
    if device == "cuda":
        from service.cost.nvml import Nvml

        nvml = Nvml.open()
        if nvml is not None:
            try:
                readings = nvml.readings()
                if readings:
                    return readings[0].name
            finally:
                nvml.close()
        return "CUDA GPU (NVML unavailable)"
    return f"{machine.get('cpu', 'CPU')} ({machine.get('cores')} cores)"


# -- Prometheus -----------------------------------------------------------------------------


def scrape_serving(url: str, models: Sequence[str]) -> dict[str, Any]:
    """Serving joules, dollars, device-seconds and predictions of `models`, from /metrics.

    Sums over the models' label sets; "sources" lists how the joules were obtained.
    """
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    names = {
        "paradigm_energy_joules_total": "joules",
        "paradigm_cost_dollars_total": "dollars",
        "paradigm_predictions_total": "predictions",
        "paradigm_device_seconds_total": "device_seconds",
    }
    totals: dict[str, Any] = dict.fromkeys(names.values(), 0.0)
    sources: set[str] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = names.get(sample.name)
            labels = sample.labels
            if key is None or labels.get("model") not in models:
                continue
            if labels.get("phase", "serve") != "serve":
                continue
            totals[key] += sample.value
            if key == "joules" and labels.get("source"):
                sources.add(labels["source"])
    totals["sources"] = sorted(sources)
    return totals


def per_thousand(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The window's serving totals and their cost per 1 000 predictions."""
    predictions = after["predictions"] - before["predictions"]
    joules = after["joules"] - before["joules"]
    dollars = after["dollars"] - before["dollars"]
    scale = 1000.0 / predictions if predictions > 0 else float("nan")
    return {
        "predictions": int(predictions),
        "joules": joules,
        "dollars": dollars,
        "device_seconds": after["device_seconds"] - before["device_seconds"],
        "joules_per_1k": joules * scale,
        "dollars_per_1k": dollars * scale,
        "energy_source": "+".join(after["sources"]) or "none",
    }


# -- training -------------------------------------------------------------------------------


def train_cnn(client: ParadigmClient, device: str, args: argparse.Namespace) -> dict[str, Any]:
    """The guide's CNN on the scale dataset on `device`: time, accuracy, joules, dollars."""
    params: dict[str, Any] = {} if args.epochs is None else {"epochs": args.epochs}
    epoch_seconds: list[float] = []

    def on_event(event: Any) -> None:
        if "epoch_seconds" in event.metrics:
            epoch_seconds.append(float(event.metrics["epoch_seconds"]))

    started = time.perf_counter()
    job = client.wait_for_job(
        client.start_training(
            DATASET, "cnn", hyperparameters=params, model_name=CNN, device=device, seed=0
        ).id,
        on_event,
    )
    wall = time.perf_counter() - started
    cost = next(m.training for m in client.cost_report(CNN).models if m.name == CNN)
    return {
        "algorithm": "cnn",
        "hyperparameters": params or "catalog defaults",
        "trained_on": job.device,
        "wall_seconds": wall,
        "fit_seconds": job.metrics.get("fit_seconds"),
        "epochs": len(epoch_seconds),
        "epoch_seconds": statistics.mean(epoch_seconds) if epoch_seconds else None,
        "accuracy": job.metrics.get("accuracy"),
        "joules": cost.joules,
        "dollars": cost.dollars,
        "energy_source": cost.energy_source,
        "gpu_joules": job.metrics.get("gpu_joules"),
    }


def train_classical(client: ParadigmClient, args: argparse.Namespace) -> dict[str, Any]:
    """Trains the classical models (queued together: the server runs what it can at once)."""
    ids = {}
    for name, algorithm, paradigm in MODELS:
        if paradigm != "classical":
            continue
        params: dict[str, Any] = {}
        if args.quick:
            params = {"max_iter": 10} if algorithm == "gradient_boosting" else {"max_iter": 200}
        ids[algorithm] = client.start_training(
            DATASET, algorithm, hyperparameters=params, model_name=name, seed=0,
            train_size=args.classical_rows,
        ).id  # fmt: skip
    trained = {}
    for algorithm, id in ids.items():
        job = client.wait_for_job(id)
        trained[algorithm] = {
            "fit_seconds": job.metrics.get("fit_seconds"),
            "accuracy": job.metrics.get("accuracy"),
        }
    return trained


# -- inference ------------------------------------------------------------------------------


def time_point(
    client: ParadigmClient, model: str, X: np.ndarray, requests: int, warmup: int
) -> dict[str, Any]:
    """Closed loop, one request at a time: latency p50/p99 (ms) and rows per second."""
    served_on = ""
    for _ in range(warmup):
        served_on = client.infer(model, X).device
    latencies: list[float] = []
    started = time.perf_counter()
    for _ in range(requests):
        sent = time.perf_counter()
        result = client.infer(model, X)
        latencies.append(time.perf_counter() - sent)
        served_on = result.device or served_on
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1e3
    return {
        "batch": len(X),
        "requests": requests,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "rows_per_second": len(X) * requests / elapsed,
        "served_on": served_on,
    }


def inference(
    client: ParadigmClient, metrics_url: str, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    from service.worker.datasets.scale import digits_scaled

    # Rows like the training data (another seed), drawn here: the server keeps its own.
    X_all, _ = digits_scaled(max(args.batches), IMAGE_SIDE, seed=1)
    X_all = np.ascontiguousarray(X_all, dtype=np.float32)
    points: list[dict[str, Any]] = []
    costs: dict[str, dict[str, Any]] = {}
    for paradigm in ("deep", "classical"):
        names = [name for name, _, p in MODELS if p == paradigm]
        before = scrape_serving(metrics_url, names)
        for name, algorithm, _ in (m for m in MODELS if m[2] == paradigm):
            for batch in args.batches:
                requests = max(2, args.requests if batch < 1024 else args.requests // 4)
                point = time_point(client, name, X_all[:batch], requests, args.warmup)
                points.append({"model": name, "algorithm": algorithm, "paradigm": paradigm,
                               **point})  # fmt: skip
                print(
                    f"  {algorithm:<20} batch {batch:>5}: p50 {point['p50_ms']:8.2f} ms  "
                    f"p99 {point['p99_ms']:8.2f} ms  {point['rows_per_second']:10.0f} rows/s",
                    flush=True,
                )
        time.sleep(0.2)  # counters are incremented as each answer leaves; let the last land
        costs[paradigm] = per_thousand(before, scrape_serving(metrics_url, names))
    return points, costs


# -- one device -----------------------------------------------------------------------------


def bench_device(
    result: dict[str, Any], workdir: Path, args: argparse.Namespace, machine: Mapping[str, Any]
) -> None:
    """Fills `result` (kept as far as it got when a step fails) for result["device"]."""
    device = result["device"]
    threads = str(args.threads)
    env = {
        "PARADIGM_DEVICE": device,
        "PARADIGM_BATCHING": "false",
        "PARADIGM_WORKER_BLAS_THREADS": threads,
        "PARADIGM_INTRA_OP_THREADS": threads,
        # The two classical jobs run side by side; the CNN's job always runs alone.
        "PARADIGM_MAX_CONCURRENT_JOBS": "2",
    }
    result.update(name=device_name(device, machine), env=env)
    data_dir = workdir / f"data-{device}"
    with (
        paradigm_server(workdir, f"server-{device}", data_dir, env=env) as server,
        ParadigmClient(server.target, timeout=3600) as client,
    ):
        client.wait_until_ready(120)
        print(f"[{device}] {result['name']}: generating {args.rows} rows ...", flush=True)
        client.generate_dataset(DATASET, args.rows, image_size=IMAGE_SIDE, seed=0)
        print(f"[{device}] training cnn ...", flush=True)
        try:
            result["training"] = train_cnn(client, device, args)
        except (JobFailed, ParadigmClientError) as error:
            result["training"] = {"error": str(error)}
            print(f"[{device}] cnn training failed: {error}", file=sys.stderr)
        if "error" in result["training"]:
            # Inference still needs a CNN: train it where the server can (auto).
            client.wait_for_job(
                client.start_training(DATASET, "cnn", hyperparameters={"epochs": 1},
                                      model_name=CNN, seed=0).id
            )  # fmt: skip
        print(f"[{device}] training classical models ...", flush=True)
        result["classical_training"] = train_classical(client, args)
        for name, _, _ in MODELS:
            deadline = time.monotonic() + 120
            while not client.model_ready(name):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"model {name} not ready on the {device} server")
                time.sleep(0.05)
        print(f"[{device}] inference ...", flush=True)
        assert server.metrics_url is not None
        result["inference"], result["cost_per_1k"] = inference(client, server.metrics_url, args)


# -- report ---------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return format(value, spec) if isinstance(value, int | float) else str(value)


def write_markdown(report: Mapping[str, Any], path: Path) -> None:
    lines = [
        "# GPU vs CPU",
        "",
        f"Run {report['started']}, `{' '.join(report['command'])}`"
        + (" (quick: tiny sizes, figures are not representative)" if report["quick"] else ""),
        "",
        "| device | name |",
        "|---|---|",
    ]
    devices = report["devices"]
    for device, entry in devices.items():
        lines.append(f"| {device} | {entry.get('name') or entry.get('skipped')} |")
    lines += [
        "",
        f"## Training: the guide's CNN on {report['rows']} scale images (28x28), seed 0",
        "",
    ]
    head = ["device", "fit s", "epoch s", "epochs", "accuracy", "joules", "dollars", "energy"]
    rows = []
    for device, entry in devices.items():
        t = entry.get("training")
        if t is None:
            rows.append([device, *(["skipped"] + ["-"] * (len(head) - 2))])
        elif "error" in t:
            rows.append([device, "failed", *(["-"] * (len(head) - 2))])
        else:
            rows.append([
                device, _fmt(t["fit_seconds"]), _fmt(t["epoch_seconds"]), _fmt(t["epochs"]),
                _fmt(t["accuracy"], ".3f"), _fmt(t["joules"]), _fmt(t["dollars"]),
                t["energy_source"] or "-",
            ])  # fmt: skip
    lines += [format_markdown(head, rows), ""]
    lines += ["## Inference: one request at a time, latency and throughput", ""]
    head = ["device", "model", "paradigm", "batch", "p50 ms", "p99 ms", "rows/s", "served on"]
    rows = [
        [device, p["algorithm"], p["paradigm"], str(p["batch"]), _fmt(p["p50_ms"]),
         _fmt(p["p99_ms"]), _fmt(p["rows_per_second"], ".0f"), p["served_on"] or "-"]
        for device, entry in devices.items()
        for p in entry.get("inference", [])
    ]  # fmt: skip
    lines += [format_markdown(head, rows), ""]
    lines += ["## Serving cost per 1 000 predictions (the server's Prometheus counters)", ""]
    head = ["device", "paradigm", "predictions", "joules / 1k", "dollars / 1k", "energy"]
    rows = [
        [device, paradigm, str(c["predictions"]), _fmt(c["joules_per_1k"]),
         _fmt(c["dollars_per_1k"]), c["energy_source"]]
        for device, entry in devices.items()
        for paradigm, c in entry.get("cost_per_1k", {}).items()
    ]  # fmt: skip
    lines += [format_markdown(head, rows), ""]
    if report["notes"]:
        lines += ["## Notes", "", *(f"- {note}" for note in report["notes"]), ""]
    path.write_text("\n".join(lines))


# -- command line ---------------------------------------------------------------------------


def _devices(text: str) -> list[str]:
    devices = [d.strip() for d in text.split(",") if d.strip()]
    bad = [d for d in devices if d not in DEVICES]
    if bad or not devices:
        raise argparse.ArgumentTypeError(f"devices are a comma list of {', '.join(DEVICES)}")
    return devices


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clients.bench.gpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument(
        "--devices",
        type=_devices,
        default=list(DEVICES),
        help="comma list of cpu, cuda (default both)",
    )
    parser.add_argument("--rows", type=int, help="scale dataset rows (60000; quick 3000)")
    parser.add_argument("--epochs", type=int, help="CNN epochs (catalog default; quick 1)")
    parser.add_argument(
        "--classical-rows",
        type=int,
        help="training rows of the classical models (10000; quick 1000)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        help="timed requests per point, a quarter at batch 1024 (200; quick 8)",
    )
    parser.add_argument("--warmup", type=int, help="untimed requests per point (5; quick 1)")
    parser.add_argument(
        "--batches", type=_ints, default=list(BATCHES), help="batch sizes (1,64,1024)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads of training workers and ONNX Runtime (all cores; quick 1)",
    )
    return parser


def resolve_defaults(args: argparse.Namespace) -> None:
    quick = args.quick
    defaults = {
        "rows": 3000 if quick else 60_000,
        "epochs": 1 if quick else None,
        "classical_rows": 1000 if quick else 10_000,
        "requests": 8 if quick else 200,
        "warmup": 1 if quick else 5,
        # One in a smoke run: OpenMP threads spin-wait, 10x slower on a shared machine.
        "threads": 1 if quick else os.cpu_count() or 1,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    resolve_defaults(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": ["python", "-m", "clients.bench.gpu", *(argv or sys.argv[1:])],
        "quick": args.quick,
        "rows": args.rows,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": machine,
        "devices": {},
        "notes": [],
    }
    with tempfile.TemporaryDirectory(prefix="paradigm-gpu-bench-") as tmp:
        for device in args.devices:
            reason = cuda_unavailable_reason() if device == "cuda" else None
            if reason is not None:
                report["devices"][device] = {"device": device, "skipped": reason}
                report["notes"].append(f"{device} skipped: {reason}")
                print(f"[{device}] skipped: {reason}", flush=True)
                continue
            entry: dict[str, Any] = {"device": device}
            report["devices"][device] = entry
            try:
                bench_device(entry, Path(tmp), args, machine)
            except (RuntimeError, ParadigmClientError, grpc.RpcError) as error:
                entry["error"] = str(error)
                report["notes"].append(f"{device} failed: {error}")
                print(f"[{device}] failed: {error}", file=sys.stderr)
    if args.quick:
        report["notes"].append(
            "quick run: gradient_boosting has 10 rounds, logistic_regression 200 iterations, "
            "and the sizes are tiny; "
            "the figures are for checking the pipeline, not for comparing devices"
        )
    with contextlib.suppress(OSError):
        report["machine"]["loadavg_end"] = list(os.getloadavg())
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str))
    write_markdown(report, out / "report.md")
    print((out / "report.md").read_text())
    failed = [d for d, e in report["devices"].items() if "error" in e]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m clients.demo`: train the guide's models and a few more, serve each, print one table.

Starts its own `paradigm-server` on free ports with a throw-away data directory (or uses
--target), trains on digits the guide's pair (linear regression and the CNN) plus logistic
regression and a random forest, and linear regression on diabetes where it belongs; then
calls every model through ModelInfer and measures median serve latency at batch 1 and 256.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clients.cli import format_markdown, format_table, key_metric
from clients.client import ParadigmClient, ParadigmClientError, ParamScalar, enum_name
from clients.harness import log_tail, paradigm_server
from service.gen.paradigm.v1 import paradigm_pb2 as pb

SERVER_NAME = "server"  # its log: <workdir>/server.log
SERVE_ROWS = 256
CALLS_AT_1 = 200
CALLS_AT_BATCH = 50
WARMUP_CALLS = 10
HEADERS = (
    "algorithm", "paradigm", "dataset", "metric", "fit s", "ONNX bytes", "parameters",
    "p50 ms @1", "p50 ms @256", "device",
)  # fmt: skip
NOTES = (
    "metric: held-out evaluation by the server. accuracy≈ is a regressor fit to class labels, "
    "its predictions rounded to the nearest class (the guide's LinearRegression on digits).",
    f"p50 ms: median ModelInfer round trip from this client after {WARMUP_CALLS} warm-up calls; "
    f"{CALLS_AT_1} calls of 1 row, {CALLS_AT_BATCH} of {SERVE_ROWS} rows. "
    "device: where the server ran the model.",
)


@dataclass(frozen=True)
class Run:
    """One training job of the demo."""

    dataset: str
    algorithm: str
    hyperparameters: dict[str, ParamScalar] = field(default_factory=dict)


def demo_runs(cnn_epochs: int | None) -> list[Run]:
    cnn = {"epochs": cnn_epochs} if cnn_epochs is not None else {}
    return [
        Run("digits", "linear_regression"),
        Run("digits", "cnn", dict(cnn)),
        Run("digits", "logistic_regression"),
        Run("digits", "random_forest"),
        Run("diabetes", "linear_regression"),
    ]


def serving_rows(dataset: str, n_features: int) -> np.ndarray:
    """The first rows of a built-in dataset, read here since no RPC downloads a dataset."""
    from sklearn import datasets  # client side: only the demo needs scikit-learn

    loaders = {"digits": datasets.load_digits, "diabetes": datasets.load_diabetes}
    X = np.asarray(loaders[dataset]().data, dtype=np.float32)[:SERVE_ROWS]
    if X.shape[1] != n_features:
        raise RuntimeError(
            f"{dataset}: scikit-learn gives {X.shape[1]} features, the server {n_features}"
        )
    return np.ascontiguousarray(X)


# -- training and serving -------------------------------------------------------------------


class _JobLine:
    """One line per job: rewritten in place on a terminal, printed once when it ends."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.live = sys.stdout.isatty()
        self.started = time.monotonic()

    def __call__(self, event: pb.JobEvent) -> None:
        if not self.live:
            return
        detail = event.stage
        if event.stage == "epoch" and event.epochs:
            figures = " ".join(f"{k} {v:.3g}" for k, v in sorted(event.metrics.items()))
            detail = f"epoch {event.epoch}/{event.epochs} {figures}"
        print(f"\r\033[K  {self.label}: {100 * event.progress:3.0f}% {detail}", end="", flush=True)

    def done(self, text: str) -> None:
        prefix = "\r\033[K" if self.live else ""
        print(f"{prefix}  {self.label}: {text} ({time.monotonic() - self.started:.1f} s)")


def train(client: ParadigmClient, run: Run, index: int, total: int) -> pb.Model:
    line = _JobLine(f"[{index}/{total}] {run.algorithm} on {run.dataset}")
    job = client.start_training(
        run.dataset, run.algorithm, hyperparameters=run.hyperparameters, seed=0
    )
    try:
        job = client.wait_for_job(job.id, on_event=line)
    except BaseException:
        line.done("did not finish")
        raise
    metric = key_metric(job.metrics)
    shown = f"{metric[0]} {metric[1]:.4g}" if metric else "no metric"
    line.done(f"{shown}, trained on {job.device} -> {job.model_name} v{job.model_version}")
    return client.get_model(job.model_name, job.model_version)


def p50_ms(call: Callable[[], object], calls: int) -> float:
    for _ in range(WARMUP_CALLS):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(client: ParadigmClient, model: pb.Model, rows: np.ndarray) -> tuple[float, float, str]:
    """p50 latency at batch 1 and at batch len(rows), and the device the server reported."""
    singles = itertools.cycle([rows[i : i + 1] for i in range(len(rows))])
    result = client.infer(model.name, rows, version=model.version)
    first = result.as_numpy(result.response.outputs[0].name)
    if first.shape[0] != len(rows):
        raise RuntimeError(f"{model.name}: {len(rows)} rows in, {first.shape[0]} out")
    at_1 = p50_ms(
        lambda: client.infer(model.name, next(singles), version=model.version), CALLS_AT_1
    )
    at_n = p50_ms(lambda: client.infer(model.name, rows, version=model.version), CALLS_AT_BATCH)
    return at_1, at_n, result.device or "?"


def table_row(model: pb.Model, at_1: float, at_n: float, device: str) -> list[str]:
    metric = key_metric(model.metrics)
    fit = model.metrics.get("fit_seconds")
    return [
        model.algorithm,
        enum_name(pb.Paradigm, "PARADIGM_", model.paradigm),
        model.dataset,
        f"{metric[0]} {metric[1]:.3g}" if metric else "-",
        "-" if fit is None else f"{fit:.3f}",
        str(model.onnx_bytes),
        str(model.parameter_count),
        f"{at_1:.2f}",
        f"{at_n:.2f}",
        device,
    ]


COST_HEADERS = (
    "algorithm", "paradigm", "dataset", "predictions", "dev-s/1k", "J/1k", "$/1k", "energy",
    "train dev-s", "train J", "train $",
)  # fmt: skip
COST_NOTES = (
    "cost: from the server's cost report (paradigm costs). dev-s = CPU seconds of model "
    "execution (GPU seconds on cuda), per 1 000 predictions served during the latency runs; "
    "J = energy (energy: rapl = measured, estimate = CPU-seconds x configured watts per core); "
    "$ = device-hours x configured price. train: the training worker's CPU time and its cost.",
)


def cost_rows(client: ParadigmClient, models: Sequence[pb.Model]) -> list[list[str]]:
    report = {(m.name, m.version): m for m in client.cost_report().models}
    rows = []
    for model in models:
        line = report[(model.name, model.version)]
        each = line.serving.per_1k_predictions
        rows.append(
            [
                model.algorithm, enum_name(pb.Paradigm, "PARADIGM_", model.paradigm),
                model.dataset, str(line.serving.predictions), f"{each.device_seconds:.4f}",
                f"{each.joules:.3f}", f"{each.dollars:.2e}",
                line.serving.total.energy_source or "-",
                f"{line.training.device_seconds:.2f}", f"{line.training.joules:.1f}",
                f"{line.training.dollars:.2e}",
            ]
        )  # fmt: skip
    return rows


def run_demo(
    client: ParadigmClient, runs: Sequence[Run]
) -> tuple[list[list[str]], list[list[str]]]:
    client.wait_until_ready(60)
    datasets = {name: client.get_dataset(name) for name in {r.dataset for r in runs}}
    rows = {name: serving_rows(name, int(d.n_features)) for name, d in datasets.items()}
    print(f"training {len(runs)} models")
    models = [train(client, run, i, len(runs)) for i, run in enumerate(runs, 1)]
    print("measuring serve latency")
    table = []
    for model in models:
        table.append(table_row(model, *measure(client, model, rows[model.dataset])))
    return table, cost_rows(client, models)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.demo", description=__doc__)
    parser.add_argument("--target", help="use this running server instead of starting one")
    parser.add_argument("--epochs", type=int, help="CNN epochs (default: the guide's 15)")
    parser.add_argument("--keep", action="store_true", help="keep the server's data directory")
    parser.add_argument("--markdown", type=Path, help="also write the table here as markdown")
    args = parser.parse_args(argv)
    runs = demo_runs(args.epochs)

    workdir: Path | None = None
    try:
        with contextlib.ExitStack() as stack:
            target = args.target
            if target is None:
                workdir = Path(tempfile.mkdtemp(prefix="paradigm-demo-"))
                print(f"starting paradigm-server (data in {workdir / 'data'})")
                server = stack.enter_context(
                    paradigm_server(workdir, SERVER_NAME, workdir / "data", timeout=90.0)
                )
                target = server.target
            client = stack.enter_context(ParadigmClient(target))
            started = time.monotonic()
            table, costs = run_demo(client, runs)
        print()
        print(format_table(HEADERS, table))
        print()
        print("\n".join(NOTES))
        print()
        print(format_table(COST_HEADERS, costs))
        print()
        print("\n".join(COST_NOTES))
        print(f"\ndone in {time.monotonic() - started:.0f} s")
        if args.markdown is not None:
            notes = "".join(f"\n{n}\n" for n in NOTES)
            cost_notes = "".join(f"\n{n}\n" for n in COST_NOTES)
            args.markdown.write_text(
                format_markdown(HEADERS, table)
                + notes
                + "\n"
                + format_markdown(COST_HEADERS, costs)
                + cost_notes
            )
            print(f"wrote {args.markdown}")
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (ParadigmClientError, RuntimeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        if workdir is not None:
            log = workdir / f"{SERVER_NAME}.log"
            print(f"server log: {log_tail(log, lines=30)}", file=sys.stderr)
        return 1
    finally:
        if workdir is not None:
            if args.keep:
                print(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

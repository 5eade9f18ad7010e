"""The `paradigm` command: datasets, algorithms, training, models and predictions from a shell.

Server errors print as `error: <CODE>: <details>` and exit 1; a traceback here always means
a bug in this program, never a refusal from the server.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.json_format import MessageToJson
from tqdm import tqdm

from clients.client import (
    TERMINAL_STATES,
    InferResult,
    ParadigmClient,
    ParadigmClientError,
    enum_name,
    from_param_value,
)
from clients.dtypes import dtype_of
from clients.search_cli import add_parsers as add_search_parsers
from clients.search_cli import cmd_leaderboard, cmd_search
from service.gen.paradigm.v1 import paradigm_pb2 as pb

DEFAULT_TARGET = "127.0.0.1:8001"
TASKS = ("classification", "regression", "anomaly_detection")
COLUMN_KINDS = ("numeric", "categorical", "boolean", "text", "ignored")
_PARAM_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Outputs worth printing by default, best first; anything else falls back to the first one.
_PRIMARY_OUTPUTS = ("label", "prediction", "score")


# -- formatting -----------------------------------------------------------------------------


def format_cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Plain-text columns: numbers right-aligned, everything else left-aligned."""
    cells = [[format_cell(v) for v in row] for row in rows]
    numeric = [
        bool(cells) and all(_is_number(row[i]) for row in cells) for i in range(len(headers))
    ]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])


def format_markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table; columns holding only numbers (or "-") are right-aligned."""

    def numeric(i: int) -> bool:
        return bool(rows) and all(_is_number(r[i]) for r in rows)

    align = ["---:" if numeric(i) else "---" for i in range(len(headers))]
    return "\n".join("| " + " | ".join(line) + " |" for line in (headers, align, *rows)) + "\n"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text == "-"
    return True


def key_metric(metrics: dict[str, float] | Any) -> tuple[str, float] | None:
    """The figure that says how good a model is: accuracy, rounded accuracy, else RMSE.

    "accuracy≈" marks a regressor trained on class labels and scored by rounding its
    predictions to the nearest class: not a classifier, so not a plain accuracy.
    """
    for key, label in (
        ("accuracy", "accuracy"),
        ("accuracy_rounded", "accuracy≈"),
        ("rmse", "RMSE"),
    ):
        if key in metrics:
            return label, float(metrics[key])
    return None


def _key_metric_text(metrics: Any) -> str:
    found = key_metric(metrics)
    return "-" if found is None else f"{found[0]} {found[1]:.4g}"


def _task(number: int) -> str:
    return enum_name(pb.Task, "TASK_", number) or "-"


def _paradigm(number: int) -> str:
    return enum_name(pb.Paradigm, "PARADIGM_", number) or "-"


def _state(number: int) -> str:
    return enum_name(pb.JobState, "JOB_STATE_", number) or "-"


def _params_text(params: Any) -> str:
    return " ".join(f"{k}={from_param_value(v)}" for k, v in sorted(params.items()))


def _metrics_lines(metrics: Any) -> list[str]:
    return [f"  {k:<22} {v:.6g}" for k, v in sorted(metrics.items())]


def _show(fields: Sequence[tuple[str, object]]) -> None:
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        print(f"{key:<{width}}  {format_cell(value)}")


# -- argument parsing -----------------------------------------------------------------------


def parse_param(text: str) -> tuple[str, str]:
    """`key=value` from --param; the value stays text and the server's catalog types it."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not _PARAM_KEY.fullmatch(key) or not value.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value.strip()


def parse_column_kinds(text: str) -> dict[str, str]:
    """`age=numeric,zip=categorical` from --column-kind."""
    kinds = {}
    for item in text.split(","):
        column, sep, kind = item.rpartition("=")
        if not sep or not column.strip() or kind.strip() not in COLUMN_KINDS:
            raise argparse.ArgumentTypeError(
                f"expected COLUMN=KIND with KIND one of {', '.join(COLUMN_KINDS)}, got {item!r}"
            )
        kinds[column.strip()] = kind.strip()
    return kinds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paradigm", description="Train, serve and compare classical and deep models."
    )
    parser.add_argument(
        "--target",
        default=os.environ.get("PARADIGM_TARGET", DEFAULT_TARGET),
        help="server address HOST:PORT (env PARADIGM_TARGET; default %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
    parser.add_argument(
        "--token",
        help="bearer token (env PARADIGM_TOKEN, which keeps it out of the process list)",
    )
    parser.add_argument("--tls-ca", type=Path, metavar="PEM", help="CA of the server's cert: TLS")
    parser.add_argument("--tls-cert", type=Path, metavar="PEM", help="client cert: mutual TLS")
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="client cert's private key")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    datasets = commands.add_parser("datasets", help="list datasets, or upload one")
    datasets_sub = datasets.add_subparsers(dest="action", metavar="ACTION")
    upload = datasets_sub.add_parser(
        "upload",
        help="upload a .npz (X, y), .csv or .parquet file, or a .zip/.tar(.gz) of class "
        "folders of images",
    )
    upload.add_argument("name")
    upload.add_argument("file", type=Path)
    upload.add_argument(
        "--label-column", default="", help="CSV and Parquet: the label column's name"
    )
    upload.add_argument("--task", choices=TASKS)
    upload.add_argument("--description", default="")
    upload.add_argument(
        "--column-kind",
        type=parse_column_kinds,
        action="append",
        default=[],
        metavar="COLUMN=KIND[,...]",
        help="override an inferred kind: numeric, categorical, boolean, text or ignored",
    )
    upload.add_argument(
        "--image-size", type=int, default=0, help="images: side to resize to (default 32)"
    )
    upload.add_argument(
        "--grayscale", action="store_true", help="images: keep one grey channel, not RGB"
    )
    show = datasets_sub.add_parser(
        "show",
        help="a dataset's columns, kinds, missing values and classes (images: also writes a "
        "contact sheet PNG)",
    )
    show.add_argument("name")
    show.add_argument(
        "--contact-sheet",
        type=Path,
        metavar="PNG",
        help="image datasets: where to write the contact sheet (default NAME-contact-sheet.png)",
    )
    generate = datasets_sub.add_parser(
        "generate", help="generate a scale dataset (digits up-sampled, shifted, rotated)"
    )
    generate.add_argument("name")
    generate.add_argument("--samples", type=int, default=20_000, help="rows, up to 200 000")
    generate.add_argument("--image-size", type=int, default=28, help="side of the images")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument(
        "--images",
        action="store_true",
        help="store as an image dataset (uint8 pixels served raw) instead of float features",
    )
    delete = datasets_sub.add_parser("delete", help="delete an uploaded or generated dataset")
    delete.add_argument("name")

    commands.add_parser("algorithms", help="list algorithms and their hyperparameters")

    train = commands.add_parser("train", help="train a model and follow its progress")
    train.add_argument("dataset")
    train.add_argument("algorithm")
    train.add_argument("--name", default="", help="model name (default DATASET-ALGORITHM)")
    train.add_argument(
        "--param",
        type=parse_param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="hyperparameter; repeat for more",
    )
    train.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    train.add_argument("--seed", type=int)
    train.add_argument("--task", choices=TASKS)
    train.add_argument("--test-fraction", type=float, default=0.0)
    train.add_argument(
        "--train-size", type=int, default=0, help="fit on at most this many rows (0: all)"
    )
    train.add_argument(
        "--world-size",
        type=int,
        default=0,
        help="deep models: train in this many DDP processes (0: one)",
    )
    train.add_argument(
        "--column-inputs",
        action="store_true",
        help="a table of numbers only: one input per column instead of one 'input' matrix",
    )
    train.add_argument(
        "--image-features",
        choices=("pixels", "hog"),
        default="",
        help="image datasets, classical algorithms: learn from the pixels (default) or from "
        "histograms of oriented gradients computed inside the model",
    )
    train.add_argument("--no-wait", action="store_true", help="print the job id and return")

    add_search_parsers(commands)

    jobs = commands.add_parser("jobs", help="list jobs, show or cancel one")
    jobs_sub = jobs.add_subparsers(dest="action", metavar="ACTION")
    for action in ("show", "cancel"):
        jobs_sub.add_parser(action, help=f"{action} a job").add_argument("id")

    models = commands.add_parser(
        "models", help="list models, show or delete one, set and list aliases"
    )
    models_sub = models.add_subparsers(dest="action", metavar="ACTION")
    for action in ("show", "delete"):
        sub = models_sub.add_parser(action, help=f"{action} a model")
        sub.add_argument("name")
        sub.add_argument(
            "--version", default="", help="a version or alias; default: latest (delete: every "
            "version)"
        )  # fmt: skip
    models_sub.choices["delete"].add_argument(
        "--force", action="store_true", help="delete even a version an alias points at"
    )
    alias = models_sub.add_parser(
        "alias", help="point an alias (e.g. champion) at a version, behind optional gates"
    )
    alias.add_argument("name")
    alias.add_argument("version", help="a version number, latest, or another alias")
    alias.add_argument("alias")
    alias.add_argument(
        "--gate-metric-epsilon", type=float, metavar="E",
        help="held-out metric must be >= the current holder's - E, on the same test rows",
    )  # fmt: skip
    alias.add_argument(
        "--gate-metric", default="", metavar="M",
        help="metric for that gate (default: accuracy, or r2 for regression)",
    )  # fmt: skip
    alias.add_argument(
        "--max-p99-ms", type=float, default=0.0, metavar="X",
        help="p99 latency budget, measured by serving it at batch 1 and 64",
    )  # fmt: skip
    alias.add_argument(
        "--max-joules-per-1k", type=float, default=0.0, metavar="J",
        help="energy budget per 1 000 predictions, measured the same way",
    )  # fmt: skip
    alias.add_argument(
        "--require-parity", action="store_true",
        help="the version must have passed ONNX parity with its native model",
    )  # fmt: skip
    alias.add_argument(
        "--probe-requests", type=int, default=0, metavar="N",
        help="requests per batch size when measuring (default 100)",
    )  # fmt: skip
    alias.add_argument("--note", default="", help="kept with the evidence")
    aliases = models_sub.add_parser("aliases", help="a model's aliases and their history")
    aliases.add_argument("name")
    aliases.add_argument("--alias", default="", help="only this alias")
    aliases.add_argument("--json", action="store_true", help="print the evidence as JSON")
    unalias = models_sub.add_parser("unalias", help="remove an alias")
    unalias.add_argument("name")
    unalias.add_argument("alias")
    unalias.add_argument("--note", default="", help="kept in the alias history")

    cascade = commands.add_parser(
        "cascade", help="a cheap model that answers when sure, a costlier one for the rest"
    )
    cascade_sub = cascade.add_subparsers(dest="action", metavar="ACTION")
    create = cascade_sub.add_parser("create", help="calibrate and store a cascade")
    create.add_argument("name")
    create.add_argument("--first", required=True, help="the cheap model: NAME or NAME:VERSION")
    create.add_argument("--then", required=True, help="the model escalated to")
    recalibrate = cascade_sub.add_parser(
        "recalibrate", help="calibrate again (a new version); the goal kept unless given"
    )
    recalibrate.add_argument("name")
    for sub, required in ((create, True), (recalibrate, False)):
        goal = sub.add_mutually_exclusive_group(required=required)
        goal.add_argument("--target-accuracy", type=float, help="cheapest reaching it")
        goal.add_argument(
            "--max-cost-per-1k", type=float, help="most accurate costing at most $ per 1 000"
        )
        goal.add_argument(
            "--within", type=float, help="cheapest within this accuracy of the second alone"
        )
        sub.add_argument("--rows", type=int, default=0, help="most calibration rows (5000)")
        sub.add_argument("--curve", type=Path, help="save the calibration curve (.csv/.json)")
    for action in ("show", "delete"):
        sub = cascade_sub.add_parser(action, help=f"{action} a cascade")
        sub.add_argument("name")
        sub.add_argument("--version", default="", help="default: newest (delete: every version)")
        if action == "show":
            sub.add_argument("--curve", type=Path, help="save the calibration curve")
    cascade_sub.add_parser("list", help="every cascade version")

    shadow = commands.add_parser(
        "shadow", help="run an alias's live traffic through a second model too and compare"
    )
    shadow_sub = shadow.add_subparsers(dest="action", metavar="ACTION")
    shadow_set = shadow_sub.add_parser("set", help="give an alias a shadow model")
    shadow_set.add_argument("alias", metavar="NAME:ALIAS")
    shadow_set.add_argument("shadow", metavar="MODEL[:VERSION]")
    shadow_set.add_argument("--rate", type=float, default=1.0, help="share sampled (1.0)")
    shadow_clear = shadow_sub.add_parser("clear", help="remove an alias's shadow")
    shadow_clear.add_argument("alias", metavar="NAME:ALIAS")
    shadow_sub.add_parser("list", help="every alias's shadow")
    shadow_report = shadow_sub.add_parser("report", help="the two models on live traffic")
    shadow_report.add_argument("alias", metavar="NAME:ALIAS")
    shadow_report.add_argument("--json", action="store_true", help="print the report as JSON")
    feedback = shadow_sub.add_parser(
        "feedback", help="the true labels of a shadowed request (by its response id)"
    )
    feedback.add_argument("request_id")
    feedback.add_argument("labels", nargs="+", metavar="LABEL")

    predict = commands.add_parser(
        "predict",
        help="run a model on rows from a .csv, .parquet or .npy file, or on image files "
        "and folders of them (image models)",
    )
    predict.add_argument("model")
    predict.add_argument("files", type=Path, nargs="+", metavar="FILE")
    predict.add_argument("--version", default="")
    predict.add_argument("--output", help="output to print or save (default: label/prediction)")
    predict.add_argument("--out", type=Path, help="save the output to this .npy file")

    imp = commands.add_parser("import", help="import an .onnx or .skops model")
    imp.add_argument("name")
    imp.add_argument("file", type=Path)
    imp.add_argument("--paradigm", choices=("classical", "deep"))
    imp.add_argument("--task", choices=TASKS)
    imp.add_argument("--n-features", type=int, default=0, help="skops: feature count")
    imp.add_argument(
        "--trust", action="append", default=[], metavar="TYPE", help="skops type to trust"
    )

    costs = commands.add_parser(
        "costs", help="what serving and training cost, per model and per paradigm"
    )
    costs.add_argument("--model", default="", help="only this model's versions")

    explain = commands.add_parser(
        "explain", help="which features a model relies on (permutation importance)"
    )
    explain.add_argument("model")
    explain.add_argument("--version", default="")
    explain.add_argument("--dataset", default="", help="default: its training dataset")
    explain.add_argument("--repeats", type=int, default=0, help="shuffles per feature (5)")
    explain.add_argument("--rows", type=int, default=0, help="most rows scored (2000)")
    explain.add_argument("--seed", type=int, default=0)
    explain.add_argument("--top", type=int, default=0, help="print only the N most important")

    export = commands.add_parser("export", help="download a model's ONNX file")
    export.add_argument("name")
    export.add_argument("file", type=Path)
    export.add_argument("--version", default="")

    # Listed here for --help only: main() hands everything after "bench" to the benchmark
    # driver, which starts its own servers and has its own flags (paradigm bench --help).
    bench = commands.add_parser(
        "bench", help="benchmark serving against its limits (JSON, table, plots)", add_help=False
    )
    bench.add_argument("args", nargs=argparse.REMAINDER)
    # Likewise for "compare" (clients/compare): it starts a server unless given --target.
    compare = commands.add_parser(
        "compare",
        help="measure the guide's deep-vs-classical claims: report, verdicts, plots",
        add_help=False,
    )
    compare.add_argument("args", nargs=argparse.REMAINDER)
    return parser


# -- commands -------------------------------------------------------------------------------


def cmd_datasets(client: ParadigmClient, args: argparse.Namespace) -> None:
    if args.action == "upload":
        ds = client.upload_dataset(
            args.name,
            args.file,
            label_column=args.label_column,
            task=args.task,
            description=args.description,
            column_kinds={k: v for given in args.column_kind for k, v in given.items()},
            image_size=args.image_size,
            grayscale=args.grayscale,
        )
        shape = f" of {list(ds.image_shape)} images" if len(ds.image_shape) == 3 else ""
        print(
            f"uploaded {ds.name}: {ds.n_samples} samples{shape}, {ds.n_features} features, "
            f"task {_task(ds.task)}, fingerprint {ds.fingerprint[:12]}"
        )
        for warning in ds.warnings:
            print(f"note: {warning}")
        return
    if args.action == "show":
        ds = client.get_dataset(args.name, contact_sheet=True)
        print(describe_dataset(ds))
        if ds.contact_sheet:
            sheet = args.contact_sheet or Path(f"{ds.name}-contact-sheet.png")
            sheet.write_bytes(ds.contact_sheet)
            print(f"contact sheet: {sheet}")
        return
    if args.action == "generate":
        ds = client.generate_dataset(
            args.name,
            args.samples,
            image_size=args.image_size,
            seed=args.seed,
            generator="digits_scaled_images" if args.images else "digits_scaled",
        )
        print(
            f"generated {ds.name}: {ds.n_samples} samples of {list(ds.image_shape)} images, "
            f"{ds.n_classes} classes, fingerprint {ds.fingerprint[:12]}"
        )
        return
    if args.action == "delete":
        client.delete_dataset(args.name)
        print(f"deleted {args.name}")
        return
    rows = [
        (
            d.name,
            _task(d.task),
            d.n_samples,
            d.n_features,
            d.n_classes or None,
            d.builtin,
            d.fingerprint[:12],
        )
        for d in client.list_datasets()
    ]
    headers = ("name", "task", "samples", "features", "classes", "builtin", "fingerprint")
    print(format_table(headers, rows))


def describe_dataset(ds: pb.Dataset) -> str:
    """What `paradigm datasets show` prints: the dataset, its columns and its classes."""
    lines = [
        f"{ds.name}: {ds.n_samples} rows, task {_task(ds.task)}, {ds.n_features} model inputs"
        + (f", label {ds.label_column!r}" if ds.label_column else "")
    ]
    if ds.description:
        lines.append(ds.description)
    if ds.columns:
        rows = [
            (
                c.name,
                pb.ColumnKind.Name(c.kind).removeprefix("COLUMN_KIND_").lower()
                + ("" if not c.given else " (given)"),
                c.dtype,
                f"{100 * c.missing / max(ds.n_samples, 1):.1f}",
                c.distinct,
                _column_values(c),
            )
            for c in ds.columns
        ]
        headers = ("column", "kind", "type", "missing %", "distinct", "values")
        lines += ["", format_table(headers, rows)]
    elif ds.image_shape:
        lines.append(f"images {list(ds.image_shape)}, {ds.n_features} pixels per row")
    else:
        lines.append(f"{ds.n_features} numeric features: {', '.join(ds.feature_names[:20])}")
    if ds.classes:
        classes = [
            (c.value, c.count, f"{100 * c.count / max(ds.n_samples, 1):.1f}") for c in ds.classes
        ]
        lines += ["", format_table(("class", "rows", "%"), classes)]
    lines += [f"note: {warning}" for warning in ds.warnings]
    return "\n".join(lines)


def _column_values(column: pb.Column) -> str:
    if column.top:
        shown = ", ".join(f"{v.value} ({v.count})" for v in column.top[:5])
        more = column.distinct - min(len(column.top), 5)
        return shown + (f", +{more} more" if more > 0 else "")
    if column.kind == pb.COLUMN_KIND_NUMERIC:
        return f"{column.min:g} .. {column.max:g}"
    return ""


def cmd_algorithms(client: ParadigmClient, args: argparse.Namespace) -> None:
    rows = [
        (
            a.name,
            _paradigm(a.paradigm),
            ",".join(_task(t) for t in a.tasks),
            " ".join(f"{h.name}={from_param_value(h.default)}" for h in a.hyperparameters),
        )
        for a in client.list_algorithms()
    ]
    print(format_table(("name", "paradigm", "tasks", "hyperparameters (defaults)"), rows))


class _Progress:
    """A tqdm bar over a job's events: stage in the description, epoch figures after it."""

    def __init__(self) -> None:
        self._bar = tqdm(total=100, unit="%", bar_format="{desc:<12} {bar} {n:3.0f}%{postfix}")

    def __call__(self, event: pb.JobEvent) -> None:
        self._bar.set_description_str(event.stage or _state(event.state), refresh=False)
        if event.stage == "epoch" and event.epochs:
            figures = {"epoch": f"{event.epoch}/{event.epochs}"}
            figures.update({k: f"{v:.4g}" for k, v in sorted(event.metrics.items())})
            self._bar.set_postfix(figures, refresh=False)
        self._bar.update(max(0.0, 100 * event.progress - self._bar.n))
        if event.state in TERMINAL_STATES:
            self.close()

    def close(self) -> None:
        self._bar.close()


def _print_job_result(job: pb.Job) -> None:
    print(f"model {job.model_name} version {job.model_version} ({job.algorithm}, {job.device})")
    print("\n".join(_metrics_lines(job.metrics)))


def cmd_train(client: ParadigmClient, args: argparse.Namespace) -> None:
    job = client.start_training(
        args.dataset,
        args.algorithm,
        hyperparameters=dict(args.param),
        model_name=args.name,
        task=args.task,
        device=args.device,
        seed=args.seed,
        test_fraction=args.test_fraction,
        train_size=args.train_size,
        world_size=args.world_size,
        column_inputs=args.column_inputs,
        image_features=args.image_features,
    )
    print(f"job {job.id} queued: {job.algorithm} on {job.dataset} -> {job.model_name}")
    if args.no_wait:
        return
    progress = _Progress()
    try:
        done = client.wait_for_job(job.id, on_event=progress)
    finally:
        progress.close()
    _print_job_result(done)


def cmd_jobs(client: ParadigmClient, args: argparse.Namespace) -> None:
    if args.action == "show":
        _show_job(client.get_job(args.id))
        return
    if args.action == "cancel":
        job = client.cancel_job(args.id)
        print(f"job {job.id}: {_state(job.state)}")
        return
    rows = [
        (
            j.id,
            enum_name(pb.JobKind, "JOB_KIND_", j.kind),
            _state(j.state),
            j.algorithm,
            j.dataset or None,
            j.model_name,
            j.model_version or None,
            f"{100 * j.progress:.0f}%",
            j.device or None,
            j.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
            if j.created_at.seconds
            else None,
        )
        for j in client.list_jobs()
    ]
    headers = (
        "id", "kind", "state", "algorithm", "dataset", "model", "version", "progress", "device",
        "created",
    )  # fmt: skip
    print(format_table(headers, rows))


def _show_job(job: pb.Job) -> None:
    _show(
        [
            ("id", job.id),
            ("kind", enum_name(pb.JobKind, "JOB_KIND_", job.kind)),
            ("state", _state(job.state)),
            ("dataset", job.dataset or None),
            ("algorithm", job.algorithm),
            ("paradigm", _paradigm(job.paradigm)),
            ("task", _task(job.task)),
            ("device", job.device or None),
            ("processes", job.world_size if job.world_size > 1 else None),
            ("model", f"{job.model_name} {job.model_version}".strip()),
            ("progress", f"{100 * job.progress:.0f}%"),
            ("hyperparameters", _params_text(job.hyperparameters) or None),
            ("error", job.error or None),
        ]
    )
    if job.metrics:
        print("metrics")
        print("\n".join(_metrics_lines(job.metrics)))


def cmd_models(client: ParadigmClient, args: argparse.Namespace) -> None:
    if args.action == "show":
        _show_model(client.get_model(args.name, args.version))
        return
    if args.action == "delete":
        versions = client.delete_model(args.name, args.version, force=args.force)
        print(f"deleted {args.name} version(s) {', '.join(versions) or '(none)'}")
        return
    if args.action == "alias":
        change = client.set_alias(
            args.name,
            args.version,
            args.alias,
            require_parity=args.require_parity,
            metric_epsilon=args.gate_metric_epsilon,
            metric=args.gate_metric,
            max_p99_ms=args.max_p99_ms,
            max_joules_per_1k=args.max_joules_per_1k,
            probe_requests=args.probe_requests,
            note=args.note,
        )
        was = f" (was version {change.previous})" if change.previous else ""
        print(f"{change.name} {change.alias} -> version {change.version}{was}")
        print("\n".join(_evidence_lines(json.loads(change.evidence_json or "{}"))))
        return
    if args.action == "unalias":
        change = client.delete_alias(args.name, args.alias, note=args.note)
        print(f"removed {change.name} alias {change.alias} (was version {change.previous})")
        return
    if args.action == "aliases":
        _show_aliases(client.list_aliases(args.name, args.alias), as_json=args.json)
        return
    rows = [
        (
            m.name,
            m.version,
            _paradigm(m.paradigm),
            m.algorithm,
            _task(m.task),
            _key_metric_text(m.metrics),
            m.onnx_bytes,
            m.parameter_count,
            f"{m.training_cost.device_seconds:.2f}",
            f"{m.training_cost.joules:.1f}",
            f"{m.training_cost.dollars:.6f}",
            ",".join(m.aliases),
        )
        for m in client.list_models()
    ]
    headers = (
        "name", "version", "paradigm", "algorithm", "task", "metric", "onnx bytes", "params",
        "train dev-s", "train J", "train $", "aliases",
    )  # fmt: skip
    print(format_table(headers, rows))
    if rows:
        print("train dev-s: CPU seconds of the training worker (+ GPU seconds); J: energy.")


def cmd_costs(client: ParadigmClient, args: argparse.Namespace) -> None:
    report = client.cost_report(args.model)
    prices = ", ".join(f"{k} ${v:g}/h" for k, v in sorted(report.price_per_device_hour.items()))

    def per_1k(serving: pb.ServingCost) -> tuple[str, str, str]:
        each = serving.per_1k_predictions
        return f"{each.device_seconds:.4f}", f"{each.joules:.3f}", f"{each.dollars:.8f}"

    paradigm_rows = [
        (
            _paradigm(g.paradigm), g.device, g.models, g.serving.predictions,
            *per_1k(g.serving), g.serving.total.energy_source or "-",
            f"{g.training.device_seconds:.2f}", f"{g.training.joules:.1f}",
            f"{g.training.dollars:.6f}",
        )
        for g in report.paradigms
    ]  # fmt: skip
    print(f"prices: {prices}")
    print(
        format_table(
            ("paradigm", "device", "models", "predictions", "dev-s/1k", "J/1k", "$/1k",
             "energy", "train dev-s", "train J", "train $"),
            paradigm_rows,
        )
    )  # fmt: skip
    model_rows = [
        (m.name, m.version, _paradigm(m.paradigm), m.algorithm, m.device or "-",
         m.serving.predictions, *per_1k(m.serving), f"{m.training.dollars:.6f}")
        for m in report.models
    ]  # fmt: skip
    print()
    print(
        format_table(
            ("model", "version", "paradigm", "algorithm", "device", "predictions", "dev-s/1k",
             "J/1k", "$/1k", "train $"),
            model_rows,
        )
    )  # fmt: skip


def _tensors_text(specs: Iterable[pb.TensorSpec]) -> str:
    return ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" for s in specs)


def _evidence_lines(evidence: dict[str, Any]) -> list[str]:
    """One line per gate checked: passed or not, and its figures."""
    lines = []
    for gate, record in evidence.get("gates", {}).items():
        # Sentences (which rows, how parity was checked) get lines of their own.
        said = {k: v for k, v in record.items() if isinstance(v, str) and len(v) > 40}
        figures = ", ".join(
            f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
            for key, value in record.items()
            if key != "passed" and key not in said
        )
        lines.append(f"  {gate}: {'passed' if record.get('passed') else 'FAILED'} ({figures})")
        lines.extend(f"    {key}: {value}" for key, value in said.items())
    for key in ("note", "source", "reason"):
        if evidence.get(key):
            lines.append(f"  {key}: {evidence[key]}")
    return lines


def _show_aliases(listing: pb.ListAliasesResponse, *, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "aliases": {a.alias: a.version for a in listing.aliases},
                    "history": [
                        {
                            "alias": e.alias,
                            "version": e.version,
                            "previous": e.previous,
                            "at": e.at.ToDatetime().isoformat(),
                            "evidence": json.loads(e.evidence_json or "{}"),
                        }
                        for e in listing.history
                    ],
                },
                indent=2,
            )
        )
        return
    print(
        format_table(
            ("name", "alias", "version", "since"),
            [
                (a.name, a.alias, a.version, a.updated_at.ToDatetime().isoformat(" ", "seconds"))
                for a in listing.aliases
            ],
        )
    )
    if listing.history:
        print("history (oldest first)")
        for e in listing.history:
            moved = f"-> version {e.version}" if e.version else "removed"
            was = f" (was {e.previous})" if e.previous else ""
            when = e.at.ToDatetime().isoformat(" ", "seconds")
            print(f"{when}  {e.alias} {moved}{was}")
            print("\n".join(_evidence_lines(json.loads(e.evidence_json or "{}"))))


def _show_model(m: pb.Model) -> None:
    _show(
        [
            ("name", m.name),
            ("version", f"{m.version}{' (latest)' if m.latest else ''}"),
            ("aliases", ", ".join(m.aliases) or None),
            ("paradigm", _paradigm(m.paradigm)),
            ("algorithm", m.algorithm),
            ("task", _task(m.task)),
            ("dataset", m.dataset or None),
            ("dataset fingerprint", m.dataset_fingerprint[:12] or None),
            ("inputs", _tensors_text(m.inputs)),
            ("outputs", _tensors_text(m.outputs)),
            ("hyperparameters", _params_text(m.hyperparameters) or None),
            ("parity max abs error", m.parity_max_abs_error),
            ("onnx bytes", m.onnx_bytes),
            ("parameters", m.parameter_count),
            ("checksum", m.checksum[:16] or None),
            ("libraries", " ".join(f"{k}={v}" for k, v in sorted(m.library_versions.items()))),
            ("created", m.created_at.ToDatetime().isoformat() if m.created_at.seconds else None),
            ("mlflow run", m.mlflow_run_id or None),
        ]
    )
    if m.metrics:
        print("metrics")
        print("\n".join(_metrics_lines(m.metrics)))


def load_rows(path: Path) -> np.ndarray:
    """Rows from a .npy array or a numeric .csv (a non-numeric first line is a header)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    elif suffix == ".csv":
        with path.open() as f:
            first = f.readline()
        try:
            [float(v) for v in first.split(",")]
            skip = 0
        except ValueError:
            skip = 1
        array = np.loadtxt(path, delimiter=",", skiprows=skip, dtype=np.float64, ndmin=2)
    else:
        raise ValueError(f"{path}: expected a .npy or .csv file")
    return array.reshape(1, -1) if array.ndim == 1 else array


def cmd_predict(client: ParadigmClient, args: argparse.Namespace) -> None:
    from clients.images import image_input

    metadata = client.model_metadata(args.model, args.version)
    if image_input(metadata.inputs) is not None:
        predict_images(client, args)
        return
    if len(args.files) != 1:
        raise ValueError(f"{args.model} takes rows from one file; several are for image models")
    args.file = args.files[0]
    if [spec.name for spec in metadata.inputs] != ["input"]:
        predict_columns(client, args)
        return
    rows = load_rows(args.file)
    if len(metadata.inputs) != 1:
        raise ValueError(f"{args.model} takes {len(metadata.inputs)} inputs; predict sends one")
    spec = metadata.inputs[0]
    # Files hold float64 or ints; the model says what it takes, so cast before sending.
    rows = rows.astype(dtype_of(spec.datatype), copy=False)
    result = client.infer(
        args.model,
        {spec.name: rows},
        version=args.version,
        outputs=[args.output] if args.output else None,
    )
    name = args.output or next(
        (n for n in _PRIMARY_OUTPUTS if n in result.outputs), next(iter(result.outputs))
    )
    values = result.as_numpy(name)
    if args.out is not None:
        np.save(args.out, values)
        print(f"saved {name} {list(values.shape)} to {args.out}", file=sys.stderr)
        return
    print(f"# {result.model_name} version {result.model_version} on {result.device}: {name}")
    table = values.reshape(values.shape[0], -1) if values.ndim else values.reshape(1, 1)
    for row in table.tolist():
        print(" ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row))


def predict_images(client: ParadigmClient, args: argparse.Namespace) -> None:
    """An image model: each file decoded and resized here; one line per file: the file,
    the class and its probability."""
    prediction = client.predict_images(args.model, args.files, version=args.version)
    _print_rows(args, prediction.result, prediction.outputs, [str(f) for f in prediction.files])


def predict_columns(client: ParadigmClient, args: argparse.Namespace) -> None:
    """A table model: the file's columns go as they are (words, blanks); one line per row."""
    from clients import columns

    prediction = client.predict(
        args.model,
        columns.read_table(args.file),
        version=args.version,
        outputs=[args.output] if args.output else None,
    )
    if prediction.left_out:
        shown = ", ".join(repr(name) for name in prediction.left_out)
        print(f"note: left out columns the model does not take: {shown}", file=sys.stderr)
    _print_rows(args, prediction.result, prediction.outputs)


def _print_rows(
    args: argparse.Namespace,
    result: InferResult,
    outputs: dict[str, np.ndarray],
    row_names: Sequence[str] | None = None,
) -> None:
    """The chosen output (label by default), one line per row, with the top probability
    beside a label; or saved as .npy with --out."""
    name = args.output or next((n for n in _PRIMARY_OUTPUTS if n in outputs), next(iter(outputs)))
    values = outputs[name]
    if args.out is not None:
        np.save(args.out, values, allow_pickle=False)
        print(f"saved {name} {list(values.shape)} to {args.out}", file=sys.stderr)
        return
    print(f"# {result.model_name} version {result.model_version} on {result.device}: {name}")
    probabilities = outputs.get("probabilities") if name == "label" else None
    for row, value in enumerate(values.reshape(len(values), -1)):
        shown = " ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in value.tolist())
        if probabilities is not None:
            shown += f"  {float(probabilities[row].max()):.3f}"
        print(f"{row_names[row]}  {shown}" if row_names else shown)


def cmd_import(client: ParadigmClient, args: argparse.Namespace) -> None:
    job = client.import_model(
        args.name,
        args.file,
        paradigm=args.paradigm,
        task=args.task,
        n_features=args.n_features,
        trusted_types=args.trust,
    )
    print(f"job {job.id} importing {args.file} as {args.name}", file=sys.stderr)
    _print_job_result(client.wait_for_job(job.id))


def cmd_explain(client: ParadigmClient, args: argparse.Namespace) -> None:
    e = client.explain(
        args.model,
        version=args.version,
        dataset=args.dataset,
        n_repeats=args.repeats,
        max_rows=args.rows,
        seed=args.seed,
    )
    native = e.native_kind or "none"
    print(
        f"# {e.model.name} version {e.model.version} on {e.dataset} ({e.rows} rows): "
        f"baseline {e.metric} {e.baseline_score:.4f}; native importances: {native}"
    )
    features = e.features[: args.top] if args.top > 0 else e.features
    rows = [
        (
            rank,
            f.feature,
            f"{f.importance_mean:.4f}",
            f"{f.importance_std:.4f}",
            f"{f.native:.4g}" if f.HasField("native") else None,
        )
        for rank, f in enumerate(features, start=1)
    ]
    print(format_table(("rank", "feature", "importance", "std", "native"), rows))
    print(
        f"importance: mean drop of {e.metric} when the feature is shuffled. "
        f"{e.seconds:.2f} s, {e.cost.device_seconds:.2f} CPU-s, ${e.cost.dollars:.6f}"
    )


def cmd_export(client: ParadigmClient, args: argparse.Namespace) -> None:
    model = client.export_model(args.name, args.file, version=args.version)
    print(f"wrote {model.name} version {model.version} ({model.onnx_bytes} bytes) to {args.file}")


def _name_alias(text: str) -> tuple[str, str]:
    name, _, alias = text.partition(":")
    if not name or not alias:
        raise SystemExit(f"expected NAME:ALIAS (e.g. digits:champion), not {text!r}")
    return name, alias


def cmd_shadow(client: ParadigmClient, args: argparse.Namespace) -> None:
    action = args.action or "list"
    if action == "list":
        rows = [
            (s.name, s.alias, f"{s.shadow_model}:{s.shadow_version or 'latest'}",
             f"{s.sample_rate:.3g}")
            for s in client.list_shadows()
        ]  # fmt: skip
        print(format_table(["name", "alias", "shadow", "rate"], rows) if rows else "no shadows")
        return
    if action == "feedback":
        done = client.submit_feedback(args.request_id, args.labels)
        print(
            f"{done.rows} rows: primary right on {done.primary_correct}, "
            f"shadow right on {done.shadow_correct}"
        )
        return
    name, alias = _name_alias(args.alias)
    if action == "set":
        model, _, version = args.shadow.partition(":")
        made = client.set_shadow(name, alias, model, version=version, sample_rate=args.rate)
        print(
            f"{name}:{alias} shadowed by {made.shadow_model}:{made.shadow_version or 'latest'} "
            f"on {made.sample_rate:.3g} of its requests"
        )
    elif action == "clear":
        client.clear_shadow(name, alias)
        print(f"{name}:{alias} has no shadow now")
    else:
        report = client.shadow_report(name, alias)
        if args.json:
            print(MessageToJson(report, preserving_proto_field_name=True))
        else:
            print(describe_shadow_report(report))


def describe_shadow_report(report: pb.ShadowReport) -> str:
    """Per pair: traffic, agreement, accuracy from feedback, latency and cost of each."""
    lines = []
    if report.HasField("shadow"):
        s = report.shadow
        lines.append(
            f"{report.name}:{report.alias} shadowed by "
            f"{s.shadow_model}:{s.shadow_version or 'latest'} at {s.sample_rate:.3g}"
        )
    else:
        lines.append(f"{report.name}:{report.alias} has no shadow now")
    if not report.pairs:
        lines.append("no shadowed requests yet")
    for pair in report.pairs:
        lines.append("")
        lines.append(f"{pair.primary} (primary) vs {pair.shadow} (shadow)")
        lines.append(
            f"requests: {pair.sampled} sampled, {pair.shadowed} shadowed, {pair.dropped} "
            f"dropped, {pair.failed} failed"
        )
        lines.append(
            f"agreement: {pair.agreement:.4f} ({pair.agreeing_rows} of {pair.compared_rows} rows)"
        )
        rows = []
        for role, figures in (("primary", pair.primary_figures), ("shadow", pair.shadow_figures)):
            accuracy = (
                f"{figures.accuracy:.4f} ({figures.correct_rows}/{figures.feedback_rows})"
                if figures.feedback_rows
                else "no feedback"
            )
            rows.append(
                (
                    role,
                    accuracy,
                    f"{figures.p50_seconds * 1e3:.3f}",
                    f"{figures.p99_seconds * 1e3:.3f}",
                    f"{figures.cost_per_1k.get('device_seconds', 0.0):.4g}",
                    f"{figures.cost_per_1k.get('dollars', 0.0):.3g}",
                )
            )
        lines.append(
            format_table(["role", "accuracy", "p50 ms", "p99 ms", "device-s/1k", "$/1k"], rows)
        )
    return "\n".join(lines)


def cmd_cascade(client: ParadigmClient, args: argparse.Namespace) -> None:
    action = args.action or "list"
    if action == "list":
        rows = [
            (
                c.name, c.version, f"{c.first}:{c.first_version}", f"{c.then}:{c.then_version}",
                f"{c.threshold:.4f}", f"{c.chosen.escalated:.1%}", f"{c.chosen.accuracy:.4f}",
                f"{c.chosen.dollars_per_1k:.3g}", f"{c.then_alone.dollars_per_1k:.3g}",
                "yes" if c.target_met else "no",
            )
            for c in client.list_cascades()
        ]  # fmt: skip
        headers = (
            "name", "version", "first", "then", "threshold", "escalated", "accuracy",
            "$/1k", "then alone $/1k", "goal met",
        )  # fmt: skip
        print(format_table(headers, rows))
        return
    if action == "delete":
        versions = client.delete_cascade(args.name, args.version)
        print(f"deleted cascade {args.name} version(s) {', '.join(versions)}")
        return
    goal = {
        "target_accuracy": getattr(args, "target_accuracy", None),
        "max_dollars_per_1k": getattr(args, "max_cost_per_1k", None),
        "accuracy_within_then": getattr(args, "within", None),
    }
    if action == "create":
        made = client.create_cascade(args.name, args.first, args.then, max_rows=args.rows, **goal)
    elif action == "recalibrate":
        made = client.recalibrate_cascade(args.name, max_rows=args.rows, **goal)
    else:
        made = client.get_cascade(args.name, args.version)
    print(describe_cascade(made))
    if args.curve is not None:
        save_curve(made, args.curve)
        print(f"curve saved to {args.curve}")


def describe_cascade(cascade: pb.Cascade) -> str:
    """The cascade, its goal and the three points that matter: A alone, chosen, B alone."""
    goal = (
        f"at most ${cascade.max_dollars_per_1k:.3g} per 1 000"
        if cascade.max_dollars_per_1k > 0
        else f"accuracy >= {cascade.target_accuracy:.4f}"
    )
    met = "met" if cascade.target_met else "NOT reachable: the closest point chosen"
    points = [
        ("first alone", cascade.first_alone),
        ("cascade", cascade.chosen),
        ("then alone", cascade.then_alone),
    ]
    rows = [
        (
            label, f"{p.threshold:.4f}", f"{p.escalated:.1%}", f"{p.accuracy:.4f}",
            f"{p.dollars_per_1k:.3g}", f"{p.device_seconds_per_1k:.3g}",
            f"{p.joules_per_1k:.3g}",
        )
        for label, p in points
    ]  # fmt: skip
    lines = [
        f"cascade {cascade.name} version {cascade.version}: "
        f"{cascade.first}:{cascade.first_version} -> {cascade.then}:{cascade.then_version}",
        f"goal {goal} ({met}); threshold {cascade.threshold:.4f} on the first model's top "
        f"probability; {cascade.calibration_rows} calibration rows of {cascade.dataset}",
        "",
        format_table(("", "threshold", "escalated", "accuracy", "$/1k", "dev-s/1k", "J/1k"), rows),
    ]
    if cascade.chosen.dollars_per_1k >= cascade.then_alone.dollars_per_1k > 0:
        lines += [
            "",
            "warning: the cascade costs more per 1 000 than the second model alone (the "
            "first model is not the cheap one here): serve the second model instead",
        ]
    held = dict(cascade.evaluation)
    if held:
        lines += [
            "",
            f"on {int(held['rows'])} held-out rows the calibration never saw: accuracy "
            f"{held['accuracy']:.4f} ({held['escalated']:.1%} escalated); first alone "
            f"{held['first_accuracy']:.4f}, then alone {held['then_accuracy']:.4f}",
        ]
    return "\n".join(lines)


def save_curve(cascade: pb.Cascade, path: Path) -> None:
    """The calibration curve as .json (one object per point) or .csv."""
    import csv
    import json

    fields = [
        "threshold", "escalated", "accuracy", "dollars_per_1k", "device_seconds_per_1k",
        "joules_per_1k", "agreement",
    ]  # fmt: skip
    points = [{f: getattr(p, f) for f in fields} for p in cascade.curve]
    if path.suffix == ".json":
        path.write_text(json.dumps(points, indent=2))
        return
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        writer.writerows(points)


COMMANDS: dict[str, Callable[[ParadigmClient, argparse.Namespace], None]] = {
    "datasets": cmd_datasets,
    "algorithms": cmd_algorithms,
    "train": cmd_train,
    "jobs": cmd_jobs,
    "models": cmd_models,
    "predict": cmd_predict,
    "import": cmd_import,
    "export": cmd_export,
    "costs": cmd_costs,
    "explain": cmd_explain,
    "cascade": cmd_cascade,
    "search": cmd_search,
    "leaderboard": cmd_leaderboard,
    "shadow": cmd_shadow,
}


def _read_optional(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


def _compare(argv: list[str]) -> int:
    """Hands everything after "compare" to clients.compare, which has its own flags and
    starts its own server unless given --target (here, before "compare", or after it)."""
    from clients.compare import driver  # matplotlib and the driver only when asked for

    at = argv.index("compare")
    head = build_parser().parse_args([*argv[:at], "compare"])
    given = any(a.startswith("--target") for a in argv[:at])
    forwarded = ["--target", head.target] if given else []
    return driver.main([*forwarded, *argv[at + 1 :]], prog="paradigm compare")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from clients.bench import run  # matplotlib and the driver only when asked for

        return run.main(argv[1:])
    if "compare" in argv and not any(
        a in COMMANDS or a == "bench" for a in argv[: argv.index("compare")]
    ):
        return _compare(argv)
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        from clients.bench import run

        return run.main(args.args)
    try:
        with ParadigmClient(
            args.target,
            timeout=args.timeout,
            token=args.token,
            root_certificates=_read_optional(args.tls_ca),
            private_key=_read_optional(args.tls_key),
            certificate_chain=_read_optional(args.tls_cert),
        ) as client:
            COMMANDS[args.command](client, args)
    except ParadigmClientError as error:
        print(f"error: {error.code.name}: {error.details}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

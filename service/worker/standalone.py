"""paradigm-train: one deep training job outside the server, as torchrun's entry point.

Run the same command on every machine of a multi-node job (deploy/k8s's training Job):

    torchrun --nnodes=$N --nproc-per-node=1 --rdzv-backend=c10d \\
        --rdzv-endpoint=<host>:29400 --rdzv-id=<job> -m service.worker.standalone \\
        --dataset digits --algorithm cnn --model-name digits-cnn-ddp --device cuda

Every rank loads and splits the dataset itself (the same rows for the same seed) and trains
its shard of every epoch (service/worker/distributed.py); rank 0 then evaluates, exports,
checks parity and publishes into the model registry that the PARADIGM_* settings name, as
a server's job would. Without torchrun (no WORLD_SIZE) it trains in this one process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from service.datasets import layout
from service.errors import InvalidArgument, ParadigmError
from service.registry.manifest import Manifest
from service.settings import Settings
from service.training import catalog
from service.training.spec import TrainingSpec
from service.worker import pipeline, training_data
from service.worker.fitting import DeepFit

DEVICES = ("auto", "cpu", "cuda")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="paradigm-train",
        description="Train one deep model with DDP under torchrun and publish it into the "
        "registry of the PARADIGM_* settings (rank 0 publishes).",
    )
    parser.add_argument(
        "--dataset", required=True, help="a built-in dataset name, or a dataset directory"
    )
    parser.add_argument("--algorithm", required=True, help="mlp, cnn, lstm or autoencoder")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="hyperparameter; repeat for more (the catalog types the value)",
    )
    parser.add_argument("--epochs", type=int, help="shortcut for --param epochs=N")
    parser.add_argument("--model-name", default="", help="default DATASET-ALGORITHM")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--task", default="", help="default: the dataset's")
    parser.add_argument(
        "--backend",
        choices=("auto", "gloo", "nccl"),
        help="DDP backend (default PARADIGM_DISTRIBUTED_BACKEND: auto, NCCL on CUDA)",
    )
    parser.add_argument("--data-dir", type=Path, help="default PARADIGM_DATA_DIR")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    code = _main(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from service.worker import distributed

        distributed.exit_rank(code)
    return code


def _main(args: argparse.Namespace) -> int:
    rank = int(os.environ.get("RANK", "0"))
    try:
        published = run(args)
    except (ParadigmError, ValueError) as exc:
        text = exc.message if isinstance(exc, ParadigmError) else str(exc)
        print(f"paradigm-train (rank {rank}): {text}", file=sys.stderr)
        return 1
    if published is not None:
        print(f"published {published.name} version {published.version}", flush=True)
    return 0


def run(args: argparse.Namespace) -> Manifest | None:
    """Trains as this rank; rank 0 publishes and returns the manifest, the others None."""
    from threadpoolctl import threadpool_limits

    overrides: dict[str, Any] = {"data_dir": args.data_dir} if args.data_dir else {}
    settings = Settings(**overrides)
    backend = args.backend or settings.distributed_backend
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    params: dict[str, Any] = dict(_param(text) for text in args.param)
    if args.epochs is not None:
        params["epochs"] = args.epochs
    algorithm = catalog.get_algorithm(args.algorithm)
    if world_size > 1 and algorithm.paradigm != "deep":
        raise InvalidArgument(
            f"{algorithm.name} is {algorithm.paradigm} and trains in one process; "
            "distributed training (WORLD_SIZE > 1) needs a deep algorithm"
        )
    with _dataset_dir(args.dataset, settings.data_dir) as dataset_dir:
        info = layout.read_info(dataset_dir)
        spec = TrainingSpec(
            job_id=_job_id(),
            dataset_dir=str(dataset_dir),
            algorithm=algorithm.name,
            hyperparameters=catalog.resolve_hyperparameters(algorithm, params),
            task=catalog.resolve_task(algorithm, info.task, args.task),
            model_name=args.model_name or f"{info.name}-{algorithm.name}",
            out_dir="",
            device=args.device,
            seed=args.seed,
            test_fraction=args.test_fraction,
            world_size=world_size,
            blas_threads=settings.worker_blas_threads,
            parity_tolerance=settings.parity_tolerance,
        )
        with threadpool_limits(limits=spec.blas_threads):
            if world_size <= 1:
                return _train_and_publish(spec, settings, backend, None)
            from service.worker import deep, distributed

            device = deep.resolve_device(args.device)
            with distributed.process_group(distributed.resolve_backend(backend, device), device):
                if rank == 0:
                    return _train_and_publish(spec, settings, backend, distributed.fit_in_group)
                data = training_data.load_training_data(spec)
                distributed.fit_in_group(pipeline.fit_request(spec, data, _quiet))
                return None


def _train_and_publish(
    spec: TrainingSpec, settings: Settings, backend: str, deep_fit: DeepFit | None
) -> Manifest:
    """The pipeline into a staging directory of the registry, then its atomic publish."""
    from service.registry.store import open_registry

    registry = open_registry(settings, settings.data_dir)
    staging = registry.new_staging_dir(spec.job_id)
    try:
        pipeline.run_training(
            replace(spec, out_dir=str(staging)), _print, backend=backend, deep_fit=deep_fit
        )
        return registry.publish(spec.model_name, staging, job_id=spec.job_id)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        registry.close()


@contextlib.contextmanager
def _dataset_dir(dataset: str, data_dir: Path) -> Iterator[Path]:
    """A dataset directory as the dataset store keeps it, an entry of
    <data_dir>/datasets, or a built-in dataset written to a temporary directory (each
    machine of a multi-node job makes its own: they need not share a disk)."""
    given = Path(dataset)
    if (given / layout.INFO_FILE).exists():
        yield given
        return
    stored = data_dir / "datasets" / dataset
    if layout.NAME_PATTERN.match(dataset) and (stored / layout.INFO_FILE).exists():
        yield stored
        return
    if dataset not in layout.BUILTIN_DATASETS:
        raise InvalidArgument(
            f"dataset {dataset!r} is neither a dataset directory, nor in "
            f"{data_dir / 'datasets'}, nor built in ({', '.join(layout.BUILTIN_DATASETS)})"
        )
    from service.worker.datasets import builtin

    with tempfile.TemporaryDirectory(prefix="paradigm-train-") as tmp:
        builtin.materialize_builtin(Path(tmp))
        yield Path(tmp) / dataset


def _param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InvalidArgument(f"--param wants KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _job_id() -> str:
    """torchrun's run id (--rdzv-id; the same on every machine), else a fresh one."""
    run_id = re.sub(r"[^A-Za-z0-9._-]", "-", os.environ.get("TORCHELASTIC_RUN_ID", ""))
    return run_id[:64] or uuid.uuid4().hex[:12]


def _print(stage: str, message: str = "", **details: Any) -> None:
    """Rank 0's progress, one line per event, on stdout (the Job's log)."""
    metrics = details.get("metrics") or {}
    shown = " ".join(f"{key}={value:.4g}" for key, value in metrics.items())
    print(f"[{stage}] {message} {shown}".rstrip(), flush=True)


def _quiet(stage: str, message: str = "", **details: Any) -> None:
    """The other ranks report nothing: rank 0 speaks for the job."""


if __name__ == "__main__":
    sys.exit(main())

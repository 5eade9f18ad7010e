"""Train the model Paradigm's `logistic_regression` trains and lay it out for Seldon MLServer.

Runs in `.venv-peers` (MLServer's own environment, with its own scikit-learn), never in
`.venv`: MLServer's sklearn runtime unpickles the model with joblib, so it must be saved by
the scikit-learn version that will load it.

    .venv-peers/bin/python clients/bench/peers/mlserver_model.py --dir DIR \
        --grpc-port 8101 --http-port 8100 [--parallel-workers 0|default] \
        [--max-batch-size 16 --max-batch-time 0.002]

writes

    DIR/settings.json                       server-wide: ports, workers, no metrics
    DIR/digits-logistic/model-settings.json mlserver_sklearn.SKLearnModel
    DIR/digits-logistic/model.joblib        the fitted Pipeline

The model is Paradigm's `logistic_regression` with its default hyperparameters
(service/training/classical.py): StandardScaler then LogisticRegression(C=1.0,
max_iter=1000, random_state=0) on digits as float32. Paradigm fits on a stratified 75 %
split and MLServer's copy on all 1797 rows; serving cost is the same either way (64 inputs,
10 classes, one matrix product).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

MODEL_NAME = "digits-logistic"
N_FEATURES = 64


def train() -> Any:
    """The fitted Pipeline, and a check that it learnt digits (training accuracy)."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    digits = load_digits()
    X = np.asarray(digits.data, dtype=np.float32)
    y = digits.target
    model = Pipeline(
        [
            ("scaler", StandardScaler()),
            ("model", LogisticRegression(C=1.0, max_iter=1000, random_state=0)),
        ]
    )
    model.fit(X, y)
    accuracy = float((model.predict(X) == y).mean())
    if accuracy < 0.95:  # digits is ~99 % separable; anything lower means a broken fit
        raise RuntimeError(f"training accuracy {accuracy:.3f}: the fit went wrong")
    print(f"trained {MODEL_NAME}: training accuracy {accuracy:.4f} on {len(y)} rows")
    return model


def server_settings(grpc_port: int, http_port: int, workers: str) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "grpc_port": grpc_port,
        # The REST server cannot be switched off; it just gets a port of its own.
        "http_port": http_port,
        # None switches the metrics server (and its per-request bookkeeping) off, as
        # --metrics-port -1 does for Paradigm.
        "metrics_endpoint": None,
        # debug=True (its default) logs every request at DEBUG; Paradigm logs at INFO.
        "debug": False,
        "load_models_at_startup": True,
    }
    # 0 runs inference in the server process itself; its default (1) hands every request to
    # one worker process over a queue, which cost throughput on this 2-core machine.
    if workers != "default":
        settings["parallel_workers"] = int(workers)
    return settings


def model_settings(max_batch_size: int, max_batch_time: float) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "name": MODEL_NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        # Declared only so ModelMetadata describes the model (MLServer's sklearn runtime
        # decodes the first input whatever its name); named like Paradigm's input.
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, N_FEATURES]}],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1, 1]}],
        "parameters": {"uri": "./model.joblib"},
    }
    # MLServer's adaptive batching (off by default) is the counterpart of Paradigm's dynamic
    # batching, which is on by default. It always waits up to max_batch_time for a batch of
    # max_batch_size, where Paradigm batches only what has queued.
    if max_batch_size > 1:
        settings["max_batch_size"] = max_batch_size
        settings["max_batch_time"] = max_batch_time
    return settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="MLServer's repository root")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument(
        "--parallel-workers",
        default="0",
        help="MLServer's parallel_workers, or 'default' to leave its own default (1)",
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=0, help="adaptive batching; 0 or 1 = off"
    )
    parser.add_argument(
        "--max-batch-time", type=float, default=0.002, help="seconds a batch may wait to fill"
    )
    args = parser.parse_args(argv)
    if args.parallel_workers != "default" and not args.parallel_workers.isdigit():
        parser.error("--parallel-workers: a number or 'default'")

    import joblib  # MLServer's sklearn runtime loads model.joblib with joblib.load

    model_dir = args.dir / MODEL_NAME
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(train(), model_dir / "model.joblib")
    model = model_settings(args.max_batch_size, args.max_batch_time)
    (model_dir / "model-settings.json").write_text(json.dumps(model, indent=2))
    settings = server_settings(args.grpc_port, args.http_port, args.parallel_workers)
    (args.dir / "settings.json").write_text(json.dumps(settings, indent=2))


if __name__ == "__main__":
    main()

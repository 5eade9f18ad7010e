"""The deep training loop: prepare the rows, build the network, run the epochs.

One loop for every way a deep model trains: a single process (deep.fit), or one rank of a
DDP job (distributed.py) when given a Shard. Keras's conventions where the guide relies on
them: its RMSprop defaults, validation_split taking the last (here: shuffled) rows.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from service.worker.deep_networks import Network, Standardize, build_body, n_outputs
from service.worker.deep_text import text_body
from service.worker.fitting import FitRequest

#: Rows per inference call (validation, predict_outputs): the CNN's first activation is 64
#: channels per pixel, ~200 MB for 1024 MNIST-sized rows and 17x that for a whole 25%
#: validation split of MNIST.
INFERENCE_CHUNK = 1024

# Keras's RMSprop defaults. torch's own RMSprop defaults (lr 1e-2, alpha 0.99, eps 1e-8) were
# measured unstable on digits with the guide's CNN (held-out accuracy 0.32-0.86 by seed).
_RMSPROP_ALPHA = 0.9
_KERAS_EPSILON = 1e-7
# Features whose training spread is below this are treated as constant (scale 1, like
# scikit-learn's StandardScaler), so a rare non-zero value at serving time stays finite.
_MIN_STD = 1e-6
# Epoch progress spans this part of the job; loading/evaluation/export own the rest.
_PROGRESS_FIRST, _PROGRESS_LAST = 0.1, 0.8

Targets = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Runs the block with `threads` torch intra-op threads, then restores the old count.

    One thread by default: the training machines have 2 cores, and torch's threads
    competing with the worker pool and ONNX Runtime were measured slower than one each.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class Prepared:
    """Tensors on the training device plus what the export heads need."""

    x_fit: torch.Tensor
    t_fit: torch.Tensor
    x_val: torch.Tensor | None
    t_val: torch.Tensor | None
    mean: np.ndarray
    std: np.ndarray
    classes: np.ndarray | None
    y_mean: float
    y_std: float
    seconds: float


@dataclass(frozen=True)
class Shard:
    """This process's part of a DDP job (service/worker/distributed.py): rank of size.

    Every rank draws the same seeded permutation and cuts it into the same global batches
    as a single process; it trains on rows rank::size of each one, so the ranks together
    see exactly the single-process batches. torch.distributed must be initialized.
    """

    rank: int
    size: int


@dataclass
class Trained:
    """A network after its epochs, with the rows' scaling and classes its export head needs."""

    network: Network
    prepared: Prepared
    #: One dict of metrics per epoch, as emitted (empty on every DDP rank but 0).
    history: list[dict[str, float]]


def train(request: FitRequest, shard: Shard | None = None) -> Trained:
    """Builds the network and runs the epochs: one process's whole job, or one DDP rank's.

    Takes a request that went through deep.check_inputs, with a resolved device. Every rank
    builds the same network from the same seed, so DDP starts from the weights a single
    process would. epochs=0 builds the untrained network (a DDP parent loads rank 0's
    weights).
    """
    device = request.device
    # fork_rng keeps the caller's global torch RNG untouched (tests run fit in-process).
    fork_devices = [torch.cuda.current_device()] if device == "cuda" else []
    with (
        torch_threads(request.threads),
        torch.random.fork_rng(devices=fork_devices),
        warnings.catch_warnings(),
    ):
        # Even kernel sizes are legal ("same" pads one side more, as Keras does); torch's
        # note that this costs a padded copy would otherwise repeat in every job log.
        warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")
        torch.manual_seed(request.seed)
        data = _prepare(request, np.random.default_rng(request.seed))
        n_features = request.X_train.shape[1]
        n_out = n_outputs(request.task, data.classes, n_features)
        if request.text is not None:
            body: nn.Module = text_body(request.algorithm, request.params, request.text, n_out)
        else:
            body = build_body(
                request.algorithm, request.params, n_features, n_out, request.image_shape
            )
        network = Network(Standardize(data.mean, data.std), body).to(device)
        history = _run_epochs(network, data, request, shard)
    return Trained(network, data, history)


def _prepare(request: FitRequest, rng: np.random.Generator) -> Prepared:
    """Splits off Keras-style validation rows, computes the scaling, moves tensors."""
    started = time.perf_counter()
    X, task = request.X_train, request.task
    n = len(X)
    target, classes = _encode_targets(X, request.y_train, task, request.classes)

    # Keras's validation_split takes the last rows; shuffling first (seeded) keeps it from
    # being one class when the data arrive sorted by label.
    order = rng.permutation(n)
    n_val = int(n * float(request.params.get("validation_split", 0.0)))
    if n - n_val < 1:
        raise ValueError(f"validation_split leaves no training rows out of {n}")
    fit_rows, val_rows = order[: n - n_val], order[n - n_val :]

    mean = X[fit_rows].mean(axis=0, dtype=np.float64)
    std = X[fit_rows].std(axis=0, dtype=np.float64)
    std[std < _MIN_STD] = 1.0
    if request.text is not None:  # token ids pass through unscaled: they index embeddings
        mean[request.text.dense :], std[request.text.dense :] = 0.0, 1.0
    y_mean, y_std = 0.0, 1.0
    if task == "regression":
        y_mean = float(target[fit_rows].mean(dtype=np.float64))
        y_std = float(target[fit_rows].std(dtype=np.float64))
        y_std = y_std if y_std >= _MIN_STD else 1.0

    def to_device(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(request.device)

    return Prepared(
        x_fit=to_device(X[fit_rows]),
        t_fit=to_device(target[fit_rows]),
        x_val=to_device(X[val_rows]) if n_val else None,
        t_val=to_device(target[val_rows]) if n_val else None,
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
        classes=classes,
        y_mean=y_mean,
        y_std=y_std,
        seconds=time.perf_counter() - started,
    )


def _encode_targets(
    X: np.ndarray, y: np.ndarray, task: str, classes: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """What the loss compares with (class indices, float targets, or X itself for the
    autoencoder) and the classes as int64 (classification only; else None)."""
    n = len(X)
    y = np.asarray(y).reshape(-1)
    if task != "anomaly_detection" and len(y) != n:
        raise ValueError(f"X_train has {n} rows but y_train has {len(y)}")
    if task == "classification":
        classes = np.unique(y) if classes is None else np.asarray(classes).reshape(-1)
        if not np.array_equal(classes, np.round(classes)):
            raise ValueError("classification needs integer class labels")
        classes = classes.astype(np.int64)
        index = np.searchsorted(classes, y)
        index = np.clip(index, 0, len(classes) - 1)
        if not np.array_equal(classes[index], y):
            raise ValueError("y_train holds labels that are not in classes")
        return index.astype(np.int64), classes
    if task == "regression":
        target = y.astype(np.float32)
        if not np.all(np.isfinite(target)):
            raise ValueError("y_train holds NaN or infinite values")
        return target, None
    return X, None  # the autoencoder's target is its input (standardized by the loop)


def _optimizer(params: dict[str, Any], weights: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    name = str(params.get("optimizer", "rmsprop"))
    lr = float(params.get("learning_rate", 1e-3))
    if name == "rmsprop":
        return torch.optim.RMSprop(weights, lr=lr, alpha=_RMSPROP_ALPHA, eps=_KERAS_EPSILON)
    if name == "adam":
        return torch.optim.Adam(weights, lr=lr, eps=_KERAS_EPSILON)
    if name == "sgd":
        return torch.optim.SGD(weights, lr=lr)
    raise ValueError(f"optimizer must be rmsprop, adam or sgd, got {name!r}")


def _run_epochs(
    network: Network, data: Prepared, request: FitRequest, shard: Shard | None
) -> list[dict[str, float]]:
    """Trains for params["epochs"] epochs; rank 0 (or the only process) validates and emits
    one "epoch" event each, and returns their metrics."""
    epochs = int(request.params.get("epochs", 15))
    batch_size = int(request.params.get("batch_size", 128))
    steps = _Steps.start(network, data, request, shard)
    # Only one process validates and reports; the others' epochs end at the loss sum.
    reports = shard is None or shard.rank == 0
    # The shuffle's own generator (on the CPU, where randperm is the same on every
    # machine) keeps batch order independent of dropout's draws from the global RNG.
    shuffle = torch.Generator().manual_seed(request.seed)
    n_fit = len(data.x_fit)
    history: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        epoch_started = time.perf_counter()
        order = torch.randperm(n_fit, generator=shuffle).to(request.device)
        metrics = {"loss": float(steps.run_epoch(order, batch_size)) / n_fit}
        if not math.isfinite(metrics["loss"]):
            raise ValueError(
                f"training diverged: loss is {metrics['loss']} at epoch {epoch}; "
                "try a lower learning_rate"
            )
        if not reports:
            continue
        if data.x_val is not None and data.t_val is not None:
            metrics.update(_validate(network, data, steps.targets, steps.loss_fn, request.task))
        # float() of the loss above waited for the device, so this is the epoch's real duration.
        metrics["epoch_seconds"] = time.perf_counter() - epoch_started
        history.append(metrics)
        request.emit(
            "epoch",
            f"epoch {epoch}/{epochs}",
            epoch=epoch,
            epochs=epochs,
            progress=_PROGRESS_FIRST + (_PROGRESS_LAST - _PROGRESS_FIRST) * epoch / epochs,
            metrics=dict(metrics),
        )
    return history


@dataclass
class _Steps:
    """One job's optimization step: forward under autocast, loss, backward, optimizer step."""

    model: nn.Module  # the network, or its DDP wrapper
    data: Prepared
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    autocast: Callable[[], contextlib.AbstractContextManager[Any]]
    targets: Targets
    shard: Shard | None
    device: str

    @classmethod
    def start(
        cls, network: Network, data: Prepared, request: FitRequest, shard: Shard | None
    ) -> _Steps:
        params, task, device = request.params, request.task, request.device
        # Inside the shared epoch loop, so single-process and DDP jobs alike get it.
        autocast = _autocast(str(params.get("precision", "fp32")), device)
        optimizer = _optimizer(params, network.parameters())
        # The guide prints relu + MSE for the classifier; softmax + cross-entropy is what
        # actually trains a classifier (the softmax is applied by the export head).
        loss_fn: nn.Module = nn.CrossEntropyLoss() if task == "classification" else nn.MSELoss()
        model: nn.Module = network
        if shard is not None:
            model = _wrap_for_ddp(network, shard, device)
            # After the identical initialization: each rank draws its own dropout masks.
            torch.manual_seed(request.seed + shard.rank)
        targets = _targets(task, data, network.scaler)
        return cls(model, data, optimizer, loss_fn, autocast, targets, shard, device)

    def run_epoch(self, order: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Trains on `order` cut into batches; the loss summed over all ranks' rows."""
        self.model.train()
        # Summed on the device: a float() per batch would wait for the GPU every step.
        total = torch.zeros((), device=self.device)
        for batch in order.split(batch_size):
            rows, weight = batch, 1.0
            if self.shard is not None:
                rows, weight = _rank_rows(batch, self.shard)
            x = self.data.x_fit[rows]
            with self.autocast():
                # The loss itself in fp32: bf16 outputs are cast up before it.
                loss = self.loss_fn(self.model(x).float(), self.targets(x, self.data.t_fit[rows]))
            self.optimizer.zero_grad(set_to_none=True)
            (loss if self.shard is None else loss * weight).backward()
            self.optimizer.step()
            total += loss.detach() * (len(rows) if weight else 0)
        if self.shard is not None:
            torch.distributed.all_reduce(total)
        return total


def _targets(task: str, data: Prepared, scaler: Standardize) -> Targets:
    """What the network's output for rows x is compared with, given their targets t."""

    def targets(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if task == "regression":
            return ((t - data.y_mean) / data.y_std).unsqueeze(1)
        if task == "anomaly_detection":
            return scaler(x)
        return t

    return targets


def _autocast(precision: str, device: str) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """A factory of the context the forward pass and loss run in for `precision`.

    "bf16": torch.autocast to bfloat16 on the training device. The weights stay fp32 (the
    master copy the optimizer steps), gradients arrive in fp32, and bf16 has fp32's
    exponent range, so no GradScaler is needed. Validation, prediction and ONNX export run
    outside it, in fp32, so serving and the parity check do not change.
    """
    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "bf16":
        device_type = "cuda" if device == "cuda" else "cpu"
        return lambda: torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")


def _wrap_for_ddp(network: Network, shard: Shard, device: str) -> nn.Module:
    """The network wrapped for DDP: gradients are averaged over the ranks at backward()."""
    from torch.nn.parallel import DistributedDataParallel

    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() != shard.size:
        raise RuntimeError(f"a DDP shard needs a process group of {shard.size} initialized")
    # No buffer sync before each forward: the only buffers are the scaler's statistics,
    # identical on every rank (same rows, same seed), so a broadcast per step is waste.
    return DistributedDataParallel(
        network,
        device_ids=[torch.cuda.current_device()] if device == "cuda" else None,
        forward_sync_buffers=False,
    )


def _rank_rows(batch: torch.Tensor, shard: Shard) -> tuple[torch.Tensor, float]:
    """This rank's rows of a global batch and the weight that makes DDP's gradient exact.

    Rank r takes rows r::size. DDP averages the ranks' gradients, so a rank's mean loss is
    weighted by size * its rows / the batch's rows: the average is then the mean over the
    whole batch, as in a single process, even when the batch does not divide evenly. A
    rank left without rows (a last batch smaller than the world) still runs a forward and
    backward, on one row weighted 0, because every rank must join every gradient
    all-reduce.
    """
    rows = batch[shard.rank :: shard.size]
    if len(rows) == 0:
        return batch[:1], 0.0
    return rows, shard.size * len(rows) / len(batch)


def _validate(
    network: Network,
    data: Prepared,
    targets: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    loss_fn: nn.Module,
    task: str,
) -> dict[str, float]:
    """Loss (and accuracy or RMSE in target units) over the validation rows, in chunks."""
    assert data.x_val is not None and data.t_val is not None
    network.eval()
    loss_sum = torch.zeros((), device=data.x_val.device)
    hits_or_squares = torch.zeros((), device=data.x_val.device)
    with torch.no_grad():
        for x, t in zip(
            data.x_val.split(INFERENCE_CHUNK), data.t_val.split(INFERENCE_CHUNK), strict=True
        ):
            out = network(x)
            loss_sum += loss_fn(out, targets(x, t)) * len(x)
            if task == "classification":
                hits_or_squares += (out.argmax(dim=1) == t).sum()
            elif task == "regression":
                error = out.squeeze(1) * data.y_std + data.y_mean - t
                hits_or_squares += torch.sum(error**2)
    n = len(data.x_val)
    metrics = {"val_loss": float(loss_sum) / n}
    if task == "classification":
        metrics["val_accuracy"] = float(hits_or_squares) / n
    elif task == "regression":
        metrics["val_rmse"] = math.sqrt(float(hits_or_squares) / n)
    return metrics

"""Mixed precision (the deep algorithms' "precision" hyperparameter) and GPU training cost.

bf16 runs torch.autocast around the forward pass and loss; weights, optimizer state,
validation and the exported model stay fp32, so serving and the parity check do not change.
The CPU tests run everywhere; the @pytest.mark.gpu ones need CUDA (tests/conftest.py).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from sklearn.datasets import load_iris

from clients.client import ParadigmClient, ParadigmClientError
from tests.server import RunningServer

# Small and quick on two cores; enough steps for iris to be learned.
IRIS_MLP: dict[str, Any] = {
    "epochs": 40,
    "batch_size": 16,
    "learning_rate": 0.01,
    "hidden_units": 32,
    "validation_split": 0.2,
}


def _float_initializers(path: Path) -> set[int]:
    model = onnx.load(str(path))
    return {init.data_type for init in model.graph.initializer if init.data_type != 7}  # INT64


def _train_bf16(client: ParadigmClient, tmp_path: Path, device: str, name: str) -> None:
    job = client.wait_for_job(
        client.start_training(
            "iris", "mlp", hyperparameters={**IRIS_MLP, "precision": "bf16"},
            model_name=name, device=device, seed=0,
        ).id
    )  # fmt: skip
    assert job.metrics["accuracy"] >= 0.8, job.metrics
    # The job only succeeds when ONNX Runtime matches torch within the parity tolerance.
    assert job.metrics["parity_max_abs_error"] < 1e-3
    assert job.device == device
    model = client.get_model(name, job.model_version)
    assert model.hyperparameters["precision"].string_value == "bf16"
    exported = tmp_path / f"{name}.onnx"
    client.export_model(name, exported, version=job.model_version)
    assert _float_initializers(exported) == {onnx.TensorProto.FLOAT}
    metadata = client.model_metadata(name, job.model_version)
    assert [t.datatype for t in metadata.inputs] == ["FP32"]
    X, _ = load_iris(return_X_y=True)
    result = client.infer(name, {"input": X[:5].astype(np.float32)})
    assert result.as_numpy("probabilities").dtype == np.float32


def test_bf16_mlp_on_cpu_trains_exports_fp32(client: ParadigmClient, tmp_path: Path) -> None:
    _train_bf16(client, tmp_path, "cpu", "iris-mlp-bf16")


def test_precision_defaults_to_fp32(client: ParadigmClient) -> None:
    cnn = {a.name: a for a in client.list_algorithms()}["cnn"]
    precision = {h.name: h for h in cnn.hyperparameters}["precision"]
    assert precision.default.string_value == "fp32"
    assert list(precision.choices) == ["fp32", "bf16"]


def test_unknown_precision_is_invalid_argument(client: ParadigmClient) -> None:
    with pytest.raises(ParadigmClientError) as caught:
        client.start_training("iris", "mlp", hyperparameters={"precision": "fp16"})
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "bf16" in str(caught.value)


def test_bf16_changes_training_but_keeps_fp32_weights() -> None:
    """In-process: autocast really runs (other weights than fp32) and masters stay fp32."""
    from tests.test_deep import _fit

    fp32 = _fit("mlp", "classification", "iris", precision="fp32")
    bf16 = _fit("mlp", "classification", "iris", precision="bf16")
    weights32 = list(fp32.head.parameters())
    weights16 = list(bf16.head.parameters())
    assert all(w.dtype.is_floating_point and w.dtype.itemsize == 4 for w in weights16)
    assert any(not (a == b).all() for a, b in zip(weights32, weights16, strict=True))
    with pytest.raises(ValueError, match="precision"):
        _fit("mlp", "classification", "iris", precision="fp8")


def test_bf16_inside_the_ddp_epoch_loop() -> None:
    """A one-rank gloo group through the training loop's Shard path: DDP forwards under autocast."""
    import torch.distributed as dist

    from service.worker import deep_training
    from service.worker.fitting import FitRequest
    from tests.test_deep import COMMON, DATA, SMALL, Recorder

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        data = DATA["iris"]
        request = FitRequest(
            "mlp", {**COMMON, **SMALL["mlp"], "precision": "bf16"}, data.X, data.y,
            task="classification", seed=0, emit=Recorder(), device="cpu", image_shape=None,
            classes=data.classes, threads=1,
        )  # fmt: skip
        history = deep_training.train(request, deep_training.Shard(0, 1)).history
    finally:
        dist.destroy_process_group()
    assert len(history) == COMMON["epochs"]
    assert all(np.isfinite(h["loss"]) for h in history)


# --------------------------------------------------------------------------- GPU only


@pytest.mark.gpu
def test_bf16_mlp_on_cuda(client: ParadigmClient, tmp_path: Path) -> None:
    _train_bf16(client, tmp_path, "cuda", "iris-mlp-bf16-cuda")


def _training_joules(server: RunningServer, model: str) -> dict[str, float]:
    """paradigm_energy_joules_total of the training phase of `model`, by device/source."""
    found: dict[str, float] = {}
    for family in server.metrics_registry.collect():
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "paradigm_energy_joules_total"
                and labels.get("phase") == "train"
                and labels.get("model") == model
            ):
                key = f"{labels.get('device')}/{labels.get('source')}"
                found[key] = found.get(key, 0.0) + sample.value
    return found


@pytest.mark.gpu
def test_cuda_training_records_nvml_joules(server: RunningServer, client: ParadigmClient) -> None:
    name = "digits-cnn-cuda-energy"
    job = client.wait_for_job(
        client.start_training(
            "digits", "cnn", hyperparameters={"epochs": 2}, model_name=name, device="cuda", seed=0
        ).id
    )
    assert job.device == "cuda"
    # NVML's energy counter delta over the fit (gpu_energy.GpuEnergy), in the job's metrics...
    assert job.metrics["gpu_joules"] > 0 and job.metrics["gpu_seconds"] > 0
    # ...in the cost the server reports for the model...
    report = client.cost_report(name)
    training = next(m.training for m in report.models if m.name == name)
    assert training.joules > 0 and "nvml" in training.energy_source
    assert training.dollars > 0
    # ...and in Prometheus, labelled with how it was obtained.
    assert _training_joules(server, name).get("cuda/nvml", 0.0) > 0

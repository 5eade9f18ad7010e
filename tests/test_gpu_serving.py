"""GPU serving: per-model device, CUDA provider options, warm-up, I/O binding, CPU-node report.

Most of it runs on CPU (the I/O binding path is forced there); what needs a real GPU is
marked `gpu` and skipped without CUDA (tests/conftest.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from clients.client import ParadigmClient, ParadigmClientError
from service.errors import Unavailable
from service.serving import runtime
from service.serving.runtime import CPU, CUDA, OnnxModel, cuda_driver_present, providers_for
from tests.server import RunningServer


def _model_file(server: RunningServer, name: str) -> Path:
    """The newest model.onnx of `name` in the server's data directory."""
    files = sorted(
        (p for p in server.settings.data_dir.rglob("model.onnx") if p.parent.parent.name == name),
        key=lambda p: p.stat().st_mtime,
    )
    assert files, f"no model.onnx for {name}"
    return files[-1]


def _parameters(client: ParadigmClient, name: str) -> dict[str, str]:
    metadata = client.model_metadata(name)
    return {key: value.string_param for key, value in metadata.parameters.items()}


@pytest.fixture(scope="module")
def mlp_model(client: ParadigmClient) -> str:
    job = client.start_training(
        "digits", "mlp", model_name="digits-mlp-gpu", hyperparameters={"epochs": 1}, seed=0
    )
    client.wait_for_job(job.id)
    return "digits-mlp-gpu"


@pytest.fixture(scope="module")
def cnn_model(client: ParadigmClient) -> str:
    job = client.start_training(
        "digits", "cnn", model_name="digits-cnn-gpu", hyperparameters={"epochs": 1}, seed=0
    )
    client.wait_for_job(job.id)
    return "digits-cnn-gpu"


# -- provider options (pure) ---------------------------------------------------------------


def test_providers_for_cpu_and_cuda_with_options() -> None:
    assert providers_for("cpu", gpu_mem_limit_bytes=1 << 30) == [CPU]
    assert providers_for("cuda") == [(CUDA, {"arena_extend_strategy": "kSameAsRequested"}), CPU]
    assert providers_for(
        "cuda", gpu_mem_limit_bytes=2 << 30, arena_extend_strategy="kNextPowerOfTwo"
    ) == [
        (CUDA, {"arena_extend_strategy": "kNextPowerOfTwo", "gpu_mem_limit": str(2 << 30)}),
        CPU,
    ]


def test_providers_for_auto_follows_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "cuda_driver_present", lambda: False)
    assert providers_for("auto") == [CPU]
    monkeypatch.setattr(runtime, "cuda_driver_present", lambda: True)
    assert providers_for("auto")[0] == (CUDA, {"arena_extend_strategy": "kSameAsRequested"})


@pytest.mark.skipif(cuda_driver_present(), reason="this machine has CUDA")
def test_cuda_asked_without_gpu_is_refused_and_logged_once(
    server: RunningServer,
    iris_model: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(runtime, "_cuda_fallback_logged", False)
    path = _model_file(server, iris_model)
    with caplog.at_level(logging.WARNING, logger="service.serving.runtime"):
        for _ in range(3):
            with pytest.raises(Unavailable, match="could not start CUDA"):
                OnnxModel(path, device="cuda")
    once = [r for r in caplog.records if "asked for CUDA" in r.getMessage()]
    assert len(once) == 1
    assert "no CUDA driver" in once[0].getMessage()


# -- I/O binding and warm-up on CPU -------------------------------------------------------


@pytest.mark.parametrize("fixture", ["iris_model", "mlp_model"])
def test_io_binding_path_equals_plain_run(
    server: RunningServer, fixture: str, request: pytest.FixtureRequest
) -> None:
    path = _model_file(server, request.getfixturevalue(fixture))
    plain = OnnxModel(path, device="cpu")
    bound = OnnxModel(path, device="cpu", io_binding=True)
    assert not plain.io_binding and bound.io_binding
    (spec,) = plain.inputs
    tail = spec.shape[1:]
    rows = np.random.default_rng(0).normal(size=(5, *tail)).astype(np.float32)
    # A non-contiguous view too: the binding reads the buffer by pointer.
    for feed in (rows, np.asfortranarray(rows)):
        names = [out.name for out in plain.outputs]
        expected = plain.run({spec.name: feed}, names)
        got = bound.run({spec.name: feed}, names)
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    bound.warm_up()
    plain.warm_up()


def test_cpu_session_does_not_bind_by_default(server: RunningServer, iris_model: str) -> None:
    assert OnnxModel(_model_file(server, iris_model), device="cpu").io_binding is False


def test_warm_up_recorded_at_load_and_metadata_reports_placement(
    server: RunningServer, client: ParadigmClient, iris_model: str
) -> None:
    client.infer(iris_model, np.zeros((1, 4), np.float32))
    parameters = _parameters(client, iris_model)
    labels = {
        "paradigm": "classical", "model": iris_model, "version": parameters["version"],
        "algorithm": "logistic_regression", "device": parameters["device"],
    }  # fmt: skip
    registry = server.metrics_registry
    count = registry.get_sample_value("paradigm_model_warmup_duration_seconds_count", labels)
    assert count == 1
    placement = registry.get_sample_value(
        "paradigm_model_placement_info", {**labels, "cpu_only_domains": "ai.onnx.ml"}
    )
    assert placement == 1
    # The session server serves on auto: CPU here, CUDA (with CPU last) on a GPU host.
    assert parameters["providers"].endswith(CPU)
    assert parameters["cpu_only_domains"] == "ai.onnx.ml"


def test_deep_model_has_no_cpu_only_domains(client: ParadigmClient, mlp_model: str) -> None:
    assert _parameters(client, mlp_model)["cpu_only_domains"] == ""


def test_failed_warm_up_still_serves(
    server: RunningServer,
    client: ParadigmClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(self: OnnxModel) -> None:
        raise RuntimeError("warm-up exploded")

    monkeypatch.setattr(OnnxModel, "warm_up", broken)
    name = "iris-warmup-fails"
    with caplog.at_level(logging.WARNING, logger="service.serving.loaded"):
        job = client.start_training("iris", "logistic_regression", model_name=name, seed=0)
        client.wait_for_job(job.id)
        result = client.infer(name, np.zeros((2, 4), np.float32))
    assert result.as_numpy(result.response.outputs[0].name).shape[0] == 2
    assert any(
        "warm-up of iris-warmup-fails" in r.getMessage() and "exploded" in r.getMessage()
        for r in caplog.records
    )
    parameters = _parameters(client, name)
    labels = {
        "paradigm": "classical", "model": name, "version": parameters["version"],
        "algorithm": "logistic_regression", "device": parameters["device"],
    }  # fmt: skip
    count = server.metrics_registry.get_sample_value(
        "paradigm_model_warmup_duration_seconds_count", labels
    )
    assert count == 0


# -- per-model device override (a server of its own) --------------------------------------


@pytest.fixture(scope="module")
def cuda_default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Serving device cuda by default, iris-lr overridden to cpu."""
    running = RunningServer(
        tmp_path_factory.mktemp("paradigm-gpu"),
        device="cuda",
        device_models={"iris-lr": "cpu"},
        warmup=False,
    )
    yield running
    running.stop()


def test_device_override_per_model(cuda_default_server: RunningServer) -> None:
    with ParadigmClient(cuda_default_server.target, timeout=120) as client:
        client.wait_until_ready(30)
        for name in ("iris-lr", "iris-other"):
            job = client.start_training("iris", "logistic_regression", model_name=name, seed=0)
            client.wait_for_job(job.id)
        iris = _parameters(client, "iris-lr")
        assert iris["device"] == "cpu"
        client.infer("iris-lr", np.zeros((1, 4), np.float32))
        if cuda_driver_present():
            assert _parameters(client, "iris-other")["device"] == "cuda"
        else:  # the default, cuda, is refused here, so the override alone let iris-lr load
            with pytest.raises(ParadigmClientError) as failed:
                client.model_metadata("iris-other")
            assert failed.value.code == grpc.StatusCode.UNAVAILABLE
    # warmup=False: the series exists, without a sample.
    count = cuda_default_server.metrics_registry.get_sample_value(
        "paradigm_model_warmup_duration_seconds_count",
        {
            "paradigm": "classical", "model": "iris-lr", "version": iris["version"],
            "algorithm": "logistic_regression", "device": "cpu",
        },
    )  # fmt: skip
    assert count == 0


# -- GPU only -----------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_provider_active_for_deep_model(server: RunningServer, mlp_model: str) -> None:
    model = OnnxModel(_model_file(server, mlp_model), device="cuda")
    assert model.device == "cuda"
    assert model.providers[0] == CUDA
    assert model.io_binding
    model.warm_up()


@pytest.mark.gpu
@pytest.mark.parametrize("fixture", ["mlp_model", "cnn_model"])
def test_cpu_and_cuda_outputs_agree(
    server: RunningServer, fixture: str, request: pytest.FixtureRequest
) -> None:
    path = _model_file(server, request.getfixturevalue(fixture))
    cpu = OnnxModel(path, device="cpu")
    cuda = OnnxModel(path, device="cuda")
    (spec,) = cpu.inputs
    rows = np.random.default_rng(1).normal(size=(32, *spec.shape[1:])).astype(np.float32)
    names = [out.name for out in cpu.outputs]
    for a, b in zip(
        cuda.run({spec.name: rows}, names), cpu.run({spec.name: rows}, names), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
def test_gpu_mem_limit_accepted(server: RunningServer, mlp_model: str) -> None:
    limit = 256 * 1024 * 1024
    model = OnnxModel(
        _model_file(server, mlp_model),
        device="cuda",
        gpu_mem_limit_bytes=limit,
        arena_extend_strategy="kNextPowerOfTwo",
    )
    options = model.session.get_provider_options()[CUDA]
    assert options["gpu_mem_limit"] == str(limit)
    assert options["arena_extend_strategy"] == "kNextPowerOfTwo"


@pytest.mark.gpu
def test_cuda_session_reports_cpu_nodes_of_sklearn_export(
    client: ParadigmClient, iris_model: str, mlp_model: str
) -> None:
    # The session server runs device=auto: on a GPU host both load on CUDA.
    iris = _parameters(client, iris_model)
    assert iris["device"] == "cuda"
    assert iris["providers"].startswith(CUDA)
    assert iris["cpu_only_domains"] == "ai.onnx.ml"
    assert _parameters(client, mlp_model)["device"] == "cuda"


# -- batching sized for the GPU --------------------------------------------------------------


def test_gpu_batching_applies_to_cuda_sessions_unless_a_model_overrides_it() -> None:
    from service.app import batching_config, gpu_batching_config
    from service.serving.dataplane import choose_batching
    from service.settings import Settings

    settings = Settings(
        gpu_batch_max_size=256,
        batching_models={"pinned": {"max_batch_size": 8}},
    )
    default, gpu = batching_config(settings), gpu_batching_config(settings)
    per_model = {"pinned": batching_config(settings, {"max_batch_size": 8})}
    assert gpu.max_batch_size == 256 and default.max_batch_size == settings.batch_max_size
    assert choose_batching("m", "cuda", default, gpu, per_model) is gpu
    assert choose_batching("m", "cpu", default, gpu, per_model) is default
    assert choose_batching("pinned", "cuda", default, gpu, per_model).max_batch_size == 8
    assert choose_batching("m", "cuda", default, None, per_model) is default

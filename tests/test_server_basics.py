"""The server starts on port 0 and answers health, metadata and catalog calls."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.client import ParadigmClient, ParadigmClientError
from service.gen.inference import grpc_predict_v2_pb2 as ipb
from service.gen.inference import grpc_predict_v2_pb2_grpc as igrpc
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from service.gen.paradigm.v1 import paradigm_pb2_grpc as pgrpc
from tests.server import RunningServer


def test_live_ready_and_metadata(channel: grpc.Channel) -> None:
    stub = igrpc.GRPCInferenceServiceStub(channel)
    assert stub.ServerLive(ipb.ServerLiveRequest()).live
    assert stub.ServerReady(ipb.ServerReadyRequest()).ready
    metadata = stub.ServerMetadata(ipb.ServerMetadataRequest())
    assert metadata.name == "paradigm"
    assert "model_configuration" in metadata.extensions


def test_health_service_reports_serving(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService", "paradigm.v1.TrainingService"):
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_builtin_datasets_listed_with_fingerprints(channel: grpc.Channel) -> None:
    datasets = pgrpc.DatasetServiceStub(channel).ListDatasets(pb.ListDatasetsRequest()).datasets
    builtin = ("digits", "iris", "wine", "breast_cancer", "diabetes")
    by_name = {d.name: d for d in datasets if d.name in builtin}
    assert set(builtin) == set(by_name)
    digits = by_name["digits"]
    assert (digits.n_samples, digits.n_features, digits.n_classes) == (1797, 64, 10)
    assert list(digits.image_shape) == [8, 8]
    assert by_name["diabetes"].task == pb.TASK_REGRESSION
    assert all(len(d.fingerprint) == 64 and d.builtin for d in by_name.values())


def test_catalog_lists_every_algorithm_with_hyperparameters(channel: grpc.Channel) -> None:
    stub = pgrpc.AlgorithmServiceStub(channel)
    algorithms = {a.name: a for a in stub.ListAlgorithms(pb.ListAlgorithmsRequest()).algorithms}
    classical = {
        "linear_regression", "ridge", "logistic_regression", "decision_tree", "random_forest",
        "gradient_boosting", "svm", "naive_bayes", "knn",
    }  # fmt: skip
    deep = {"mlp", "cnn", "lstm", "autoencoder"}
    assert classical | deep <= set(algorithms)
    assert all(algorithms[n].paradigm == pb.PARADIGM_CLASSICAL for n in classical)
    assert all(algorithms[n].paradigm == pb.PARADIGM_DEEP for n in deep)
    cnn = {h.name: h for h in algorithms["cnn"].hyperparameters}
    assert cnn["batch_size"].default.int_value == 128
    assert cnn["epochs"].default.int_value == 15
    assert cnn["optimizer"].default.string_value == "rmsprop"
    assert cnn["learning_rate"].default.float_value == 1e-3
    only_deep = stub.ListAlgorithms(pb.ListAlgorithmsRequest(paradigm=pb.PARADIGM_DEEP))
    assert {a.name for a in only_deep.algorithms} == deep


def test_reflection_lists_services(channel: grpc.Channel) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    answer = next(iter(stub.ServerReflectionInfo(iter([request]))))
    names = {s.name for s in answer.list_services_response.service}
    assert {"inference.GRPCInferenceService", "paradigm.v1.ModelService"} <= names


def test_a_taken_port_fails_loudly(server: RunningServer, tmp_path: Path) -> None:
    """gRPC shares ports by default (SO_REUSEPORT); ours must refuse a port in use."""
    import pytest

    with pytest.raises(Exception, match="Failed to bind"):
        RunningServer(tmp_path / "data", port=server.app.port)


def test_deleting_a_model_drops_its_metric_series(
    server: RunningServer, client: ParadigmClient
) -> None:
    from prometheus_client import generate_latest

    job = client.start_training("iris", "naive_bayes", model_name="iris-short-lived", seed=0)
    client.wait_for_job(job.id)
    client.infer("iris-short-lived", np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ParadigmClientError):
        client.infer("iris-short-lived", np.zeros((2, 3), dtype=np.float32))

    # Serving series go with the version; what training it cost is history and stays.
    def series() -> list[str]:
        text = generate_latest(server.metrics_registry).decode()
        return [
            line for line in text.splitlines()
            if 'model="iris-short-lived"' in line and "paradigm_training_" not in line
            and 'phase="train"' not in line
        ]  # fmt: skip

    before = series()
    assert any("paradigm_inference_requests_total" in line for line in before)
    assert any('code="INVALID_ARGUMENT"' in line for line in before)
    client.delete_model("iris-short-lived")
    assert series() == []

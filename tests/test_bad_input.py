"""Bad input gets a clear status and a message saying what was expected; never UNKNOWN."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from clients.client import ParadigmClient, ParadigmClientError
from service.gen.inference import grpc_predict_v2_pb2 as ipb
from service.gen.inference import grpc_predict_v2_pb2_grpc as igrpc
from service.serving.runtime import cuda_driver_present

Tensor = ipb.ModelInferRequest.InferInputTensor


def infer_raw(channel: grpc.Channel, request: ipb.ModelInferRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        igrpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    return error.value


def expect(code: grpc.StatusCode, fragment: str, call: object, *args: object, **kw: object) -> None:
    with pytest.raises(ParadigmClientError) as error:
        call(*args, **kw)  # type: ignore[operator]
    assert error.value.code == code, error.value.details
    assert fragment in error.value.details, error.value.details


def test_unknown_model_is_not_found(client: ParadigmClient) -> None:
    expect(grpc.StatusCode.NOT_FOUND, "'nope' not found", client.infer, "nope", np.zeros((1, 4)))
    expect(grpc.StatusCode.NOT_FOUND, "not found", client.model_metadata, "nope")
    assert client.model_ready("nope") is False


def test_unknown_version_is_not_found(client: ParadigmClient, iris_model: str) -> None:
    x = np.zeros((1, 4), np.float32)
    expect(grpc.StatusCode.NOT_FOUND, "versions: ['1']", client.infer, iris_model, x, version="9")


def test_wrong_dtype_says_what_is_expected(client: ParadigmClient, iris_model: str) -> None:
    x = np.zeros((2, 4), np.float64)
    expect(grpc.StatusCode.INVALID_ARGUMENT, "datatype FP64; model expects FP32",
           client.infer, iris_model, x)  # fmt: skip


def test_wrong_shape_says_what_is_expected(client: ParadigmClient, iris_model: str) -> None:
    x = np.zeros((2, 5), np.float32)
    expect(grpc.StatusCode.INVALID_ARGUMENT, "shape [2, 5]; model expects [-1, 4]",
           client.infer, iris_model, x)  # fmt: skip
    expect(grpc.StatusCode.INVALID_ARGUMENT, "model expects [-1, 4]",
           client.infer, iris_model, np.zeros(4, np.float32))  # fmt: skip


def test_missing_and_unexpected_inputs(client: ParadigmClient, iris_model: str) -> None:
    x = np.zeros((1, 4), np.float32)
    expect(grpc.StatusCode.INVALID_ARGUMENT, "unexpected input 'features'; model 'iris-lr' "
           "expects: input FP32 [-1, 4]", client.infer, iris_model, {"features": x})  # fmt: skip
    expect(grpc.StatusCode.INVALID_ARGUMENT, "missing input 'input'",
           client.infer, iris_model, {})  # fmt: skip


def test_nan_empty_batch_and_unknown_output(client: ParadigmClient, iris_model: str) -> None:
    x = np.zeros((3, 4), np.float32)
    x[1, 2] = np.nan
    expect(grpc.StatusCode.INVALID_ARGUMENT, "NaN", client.infer, iris_model, x)
    expect(grpc.StatusCode.INVALID_ARGUMENT, "empty batch",
           client.infer, iris_model, np.zeros((0, 4), np.float32))  # fmt: skip
    expect(grpc.StatusCode.INVALID_ARGUMENT, "unknown output 'logits'",
           client.infer, iris_model, x[:1], outputs=["logits"])  # fmt: skip


def test_raw_byte_length_mismatch(channel: grpc.Channel, iris_model: str) -> None:
    request = ipb.ModelInferRequest(
        model_name=iris_model,
        inputs=[Tensor(name="input", datatype="FP32", shape=[2, 4])],
        raw_input_contents=[b"\0" * 31],
    )
    error = infer_raw(channel, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "31 bytes of raw content, but shape [2, 4] of FP32 needs 32" in error.details()


def test_unknown_datatype_and_raw_count(channel: grpc.Channel, iris_model: str) -> None:
    request = ipb.ModelInferRequest(
        model_name=iris_model,
        inputs=[Tensor(name="input", datatype="FLOAT", shape=[1, 4])],
        raw_input_contents=[b"\0" * 16],
    )
    error = infer_raw(channel, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "'FLOAT'" in error.details()
    request = ipb.ModelInferRequest(
        model_name=iris_model,
        inputs=[Tensor(name="input", datatype="FP32", shape=[1, 4])],
        raw_input_contents=[b"\0" * 16, b"\0" * 16],
    )
    error = infer_raw(channel, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "2 entries" in error.details()


def test_typed_request_gets_typed_answer(
    channel: grpc.Channel, client: ParadigmClient, iris_model: str
) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    tensor = Tensor(name="input", datatype="FP32", shape=[2, 4])
    tensor.contents.fp32_contents.extend(np.ravel(rows).tolist())
    stub = igrpc.GRPCInferenceServiceStub(channel)
    answer = stub.ModelInfer(ipb.ModelInferRequest(model_name=iris_model, inputs=[tensor]))
    assert not answer.raw_output_contents
    by_name = {o.name: o for o in answer.outputs}
    typed_labels = list(by_name["label"].contents.int64_contents)
    raw_labels = client.infer(iris_model, np.asarray(rows, np.float32)).as_numpy("label")
    assert typed_labels == raw_labels.tolist() == [0, 2]
    assert len(by_name["probabilities"].contents.fp32_contents) == 6
    wrong = Tensor(name="input", datatype="FP32", shape=[2, 4])
    wrong.contents.fp32_contents.extend([1.0] * 7)
    error = infer_raw(channel, ipb.ModelInferRequest(model_name=iris_model, inputs=[wrong]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs 8" in error.details()


def test_model_config_for_perf_analyzer(client: ParadigmClient, iris_model: str) -> None:
    config = client.model_config(iris_model)
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size > 0
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("input", ipb.TYPE_FP32, [4])
    ]
    assert {o.name for o in config.output} == {"label", "probabilities"}


def test_training_request_errors(client: ParadigmClient) -> None:
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    expect(grpc.StatusCode.NOT_FOUND, "dataset 'mnist' not found",
           client.start_training, "mnist", "cnn")  # fmt: skip
    expect(invalid, "logistic_regression", client.start_training, "iris", "logistic")
    expect(invalid, "max_iter", client.start_training, "iris", "logistic_regression",
           hyperparameters={"max_iterations": 5})  # fmt: skip
    expect(invalid, "n_estimators", client.start_training, "iris", "random_forest",
           hyperparameters={"n_estimators": -3})  # fmt: skip
    expect(invalid, "rmsprop", client.start_training, "digits", "cnn",
           hyperparameters={"optimizer": "lbfgs"})  # fmt: skip
    expect(invalid, "image", client.start_training, "iris", "cnn")
    expect(invalid, "classification", client.start_training, "diabetes", "logistic_regression")
    expect(invalid, "model name", client.start_training, "iris", "knn", model_name="../etc")
    expect(grpc.StatusCode.NOT_FOUND, "job 'zzz' not found", client.get_job, "zzz")


@pytest.mark.skipif(cuda_driver_present(), reason="this machine has CUDA")
def test_failed_job_reports_why(client: ParadigmClient) -> None:
    from clients.client import JobFailed

    job = client.start_training("iris", "mlp", device="cuda", hyperparameters={"epochs": 1})
    with pytest.raises(JobFailed) as failure:
        client.wait_for_job(job.id)
    assert "cuda" in failure.value.job.error

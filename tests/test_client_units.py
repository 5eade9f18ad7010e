"""The client's parts that need no server: dtypes, decoding, parameter mapping, CLI parsing."""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc
import numpy as np
import pytest

from clients import cli, dtypes
from clients.cli import format_markdown
from clients.client import (
    InferResult,
    JobFailed,
    ParadigmClient,
    ParadigmClientError,
    enum_value,
    from_param_value,
    make_infer_request,
    to_param_value,
)
from service.gen.inference import grpc_predict_v2_pb2 as oip
from service.gen.paradigm.v1 import paradigm_pb2 as pb

# A port nothing listens on: connecting is refused at once.
DEAD_TARGET = "127.0.0.1:1"


def sample(datatype: dtypes.Datatype) -> np.ndarray:
    values = np.array([[0, 1, 2], [3, 4, 5]])
    if datatype.name == "BOOL":
        return values % 2 == 0
    return values.astype(datatype.dtype)


# -- dtypes ---------------------------------------------------------------------------------


NUMERIC = [d for d in dtypes.DATATYPES if d.name != "BYTES"]


def test_table_covers_every_oip_datatype() -> None:
    names = {d.name for d in dtypes.DATATYPES}
    expected = {"BOOL", "FP16", "FP32", "FP64", "BYTES"}
    expected |= {f"{s}{b}" for s in ("INT", "UINT") for b in (8, 16, 32, 64)}
    assert names == expected


@pytest.mark.parametrize("datatype", NUMERIC, ids=lambda d: d.name)
def test_dtype_round_trip(datatype: dtypes.Datatype) -> None:
    array = sample(datatype)
    assert dtypes.datatype_of(array.dtype) == datatype.name
    assert dtypes.dtype_of(datatype.name) == array.dtype
    raw = dtypes.to_raw(array)
    assert len(raw) == array.size * datatype.dtype.itemsize
    back = dtypes.from_raw(raw, datatype.name, array.shape)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_bytes_round_trip_as_length_prefixed_utf8() -> None:
    words = np.array([["Oslo"], [""], ["Kyiv ✓"]], dtype=object)
    assert dtypes.datatype_of(words.dtype) == "BYTES"
    assert dtypes.datatype_of(np.array(["a", "bc"]).dtype) == "BYTES"
    raw = dtypes.to_raw(words)
    assert raw[:8] == b"\x04\x00\x00\x00Oslo" and len(raw) == 3 * 4 + 4 + 0 + len("Kyiv ✓".encode())
    back = dtypes.from_raw(raw, "BYTES", [3, 1])
    assert back.dtype == object and back.tolist() == [["Oslo"], [""], ["Kyiv ✓"]]
    with pytest.raises(ValueError, match="truncated"):
        dtypes.from_raw(raw[:-3], "BYTES", [3, 1])
    with pytest.raises(ValueError, match="holds 2 elements"):
        dtypes.from_raw(raw[:8] + raw[8:12], "BYTES", [3, 1])


def test_raw_bytes_are_little_endian_row_major_whatever_the_input() -> None:
    big = np.array([[1, 2], [3, 4]], dtype=">i4")
    assert dtypes.datatype_of(big.dtype) == "INT32"
    column_major = np.asfortranarray(big)
    expected = b"".join(int(v).to_bytes(4, "little") for v in (1, 2, 3, 4))
    assert dtypes.to_raw(big) == expected
    assert dtypes.to_raw(column_major) == expected


@pytest.mark.parametrize("dtype", [np.complex64, "datetime64[s]"])
def test_unsupported_numpy_dtypes_are_refused(dtype: object) -> None:
    with pytest.raises(ValueError, match="no Open Inference Protocol datatype"):
        dtypes.datatype_of(dtype)  # type: ignore[arg-type]


def test_unknown_datatype_and_short_buffer_are_refused() -> None:
    with pytest.raises(ValueError, match="STRING"):
        dtypes.lookup("STRING")
    with pytest.raises(ValueError, match="needs 24 bytes, got 20"):
        dtypes.from_raw(b"\0" * 20, "FP32", [2, 3])


# -- inference messages ---------------------------------------------------------------------


def hand_built_response() -> oip.ModelInferResponse:
    response = oip.ModelInferResponse(model_name="digits-cnn", model_version="3", id="req-7")
    response.outputs.add(name="label", datatype="INT64", shape=[3])
    response.outputs.add(name="probabilities", datatype="FP32", shape=[3, 2])
    response.raw_output_contents.append(np.array([1, 0, 1], dtype="<i8").tobytes())
    response.raw_output_contents.append(
        np.array([[0.25, 0.75], [0.5, 0.5], [0.0, 1.0]], dtype="<f4").tobytes()
    )
    response.parameters["device"].string_param = "cuda"
    return response


def test_infer_result_decodes_raw_outputs() -> None:
    result = InferResult(hand_built_response())
    assert list(result.outputs) == ["label", "probabilities"]
    np.testing.assert_array_equal(result.as_numpy("label"), [1, 0, 1])
    assert result.as_numpy("label").dtype == np.int64
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (3, 2)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities[0], [0.25, 0.75])
    assert result.model_name == "digits-cnn"
    assert result.model_version == "3"
    assert result.id == "req-7"
    assert result.device == "cuda"
    with pytest.raises(KeyError, match="label"):
        result.as_numpy("prediction")


def test_infer_result_decodes_typed_contents() -> None:
    response = oip.ModelInferResponse(model_name="m", model_version="1")
    out = response.outputs.add(name="prediction", datatype="FP32", shape=[2, 1])
    out.contents.fp32_contents.extend([1.5, -2.0])
    result = InferResult(response)
    np.testing.assert_array_equal(result.as_numpy("prediction"), [[1.5], [-2.0]])
    assert result.device == ""


def test_infer_result_refuses_mismatched_raw_contents() -> None:
    response = hand_built_response()
    del response.raw_output_contents[1]
    with pytest.raises(ValueError, match="2 outputs but 1 raw"):
        InferResult(response)


def test_infer_request_sends_a_bare_array_as_input_in_raw_bytes() -> None:
    rows = np.arange(6, dtype=np.float32).reshape(2, 3)
    request = make_infer_request("iris-svm", rows, version="2", outputs=["label"], request_id="r")
    assert (request.model_name, request.model_version, request.id) == ("iris-svm", "2", "r")
    [tensor] = request.inputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("input", "FP32", [2, 3])
    assert request.raw_input_contents[0] == rows.tobytes()
    assert [o.name for o in request.outputs] == ["label"]


def test_infer_request_keeps_named_inputs_in_order() -> None:
    request = make_infer_request(
        "m", {"a": np.zeros((1, 2), dtype=np.uint8), "b": np.ones(3, dtype=np.float64)}
    )
    assert [(t.name, t.datatype) for t in request.inputs] == [("a", "UINT8"), ("b", "FP64")]
    assert len(request.raw_input_contents) == 2
    assert not request.outputs


# -- hyperparameters and enums --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (3, "int_value"),
        (0.5, "float_value"),
        ("rbf", "string_value"),
        (True, "bool_value"),
        (False, "bool_value"),
        (np.int32(7), "int_value"),
        (np.float32(0.25), "float_value"),
        (np.bool_(True), "bool_value"),
    ],
)
def test_param_value_mapping(value: object, kind: str) -> None:
    param = to_param_value(value)  # type: ignore[arg-type]
    assert param.WhichOneof("kind") == kind
    back = from_param_value(param)
    assert back == (value.item() if isinstance(value, np.generic) else value)
    assert type(back) is type(value.item() if isinstance(value, np.generic) else value)


def test_param_value_refuses_other_types_and_reads_empty_as_none() -> None:
    with pytest.raises(TypeError):
        to_param_value([1, 2])  # type: ignore[arg-type]
    assert from_param_value(pb.ParamValue()) is None


def test_enum_values_by_short_name_number_or_none() -> None:
    assert enum_value(pb.Task, "TASK_", "anomaly-detection") == pb.TASK_ANOMALY_DETECTION
    assert enum_value(pb.Device, "DEVICE_", "CUDA") == pb.DEVICE_CUDA
    assert enum_value(pb.Paradigm, "PARADIGM_", None) == pb.PARADIGM_UNSPECIFIED
    assert enum_value(pb.Paradigm, "PARADIGM_", pb.PARADIGM_DEEP) == pb.PARADIGM_DEEP
    with pytest.raises(ValueError, match=r"unknown device 'tpu'; one of \['auto', 'cpu', 'cuda'\]"):
        enum_value(pb.Device, "DEVICE_", "tpu")


# -- errors ---------------------------------------------------------------------------------


def test_rpc_errors_become_paradigm_client_errors() -> None:
    with ParadigmClient(DEAD_TARGET, timeout=2.0) as client:
        with pytest.raises(ParadigmClientError) as caught:
            client.list_models()
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        assert caught.value.details
        # Streams are wrapped too, while they are iterated.
        with pytest.raises(ParadigmClientError):
            list(client.watch_job("no-such-job"))


def test_wait_until_ready_gives_up_with_deadline_exceeded() -> None:
    with ParadigmClient(DEAD_TARGET) as client, pytest.raises(ParadigmClientError) as caught:
        client.wait_until_ready(0.3)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_job_failed_carries_the_job_and_its_error() -> None:
    failed = JobFailed(pb.Job(id="j1", state=pb.JOB_STATE_FAILED, error="bad data"))
    assert isinstance(failed, ParadigmClientError)
    assert failed.job.id == "j1"
    assert "bad data" in failed.details
    cancelled = JobFailed(pb.Job(id="j2", state=pb.JOB_STATE_CANCELLED))
    assert cancelled.code == grpc.StatusCode.CANCELLED


def test_local_argument_errors_need_no_server(tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("1,2\n")
    with ParadigmClient(DEAD_TARGET) as client:
        with pytest.raises(ValueError, match="suffix"):
            client.upload_dataset("x", data)
        with pytest.raises(FileNotFoundError):
            client.import_model("x", tmp_path / "missing.onnx")


# -- the CLI --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("epochs=3", ("epochs", "3")),
        (" learning_rate = 0.01 ", ("learning_rate", "0.01")),
        ("kernel=rbf", ("kernel", "rbf")),
        ("expr=a=b", ("expr", "a=b")),
    ],
)
def test_parse_param(text: str, expected: tuple[str, str]) -> None:
    assert cli.parse_param(text) == expected


@pytest.mark.parametrize("text", ["epochs", "=3", "epochs=", "1x=2", "a b=1"])
def test_parse_param_refuses_bad_formats(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        cli.parse_param(text)


def test_train_arguments() -> None:
    args = cli.build_parser().parse_args(
        ["train", "digits", "cnn", "--param", "epochs=3", "--param", "dropout=0.1",
         "--device", "cpu", "--seed", "7", "--no-wait"]
    )  # fmt: skip
    assert (args.command, args.dataset, args.algorithm) == ("train", "digits", "cnn")
    assert dict(args.param) == {"epochs": "3", "dropout": "0.1"}
    assert (args.device, args.seed, args.no_wait, args.name) == ("cpu", 7, True, "")


def test_bad_param_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.build_parser().parse_args(["train", "digits", "cnn", "--param", "epochs"])
    assert caught.value.code == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_bad_device_is_an_argparse_error() -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "digits", "cnn", "--device", "tpu"])


def test_subcommand_actions_and_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARADIGM_TARGET", "10.0.0.2:9000")
    parser = cli.build_parser()
    assert parser.parse_args(["datasets"]).target == "10.0.0.2:9000"
    assert parser.parse_args(["datasets"]).action is None
    upload = parser.parse_args(["datasets", "upload", "mine", "x.csv", "--label-column", "y"])
    assert (upload.action, upload.name, upload.file, upload.label_column) == (
        "upload", "mine", Path("x.csv"), "y",
    )  # fmt: skip
    delete = parser.parse_args(["--target", "h:1", "models", "delete", "m", "--version", "2"])
    assert (delete.target, delete.action, delete.name, delete.version) == (
        "h:1",
        "delete",
        "m",
        "2",
    )
    assert parser.parse_args(["jobs", "cancel", "abc"]).id == "abc"
    predict = parser.parse_args(["predict", "m", "rows.npy", "--output", "probabilities"])
    assert (predict.output, predict.out, predict.version) == ("probabilities", None, "")
    imported = parser.parse_args(["import", "m", "m.skops", "--trust", "a.B", "--trust", "c.D"])
    assert imported.trust == ["a.B", "c.D"]


def test_server_errors_print_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--target", DEAD_TARGET, "--timeout", "2", "models"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: UNAVAILABLE: ")
    assert "Traceback" not in err


def test_load_rows_from_csv_and_npy(tmp_path: Path) -> None:
    with_header = tmp_path / "a.csv"
    with_header.write_text("f0,f1\n1,2\n3,4.5\n")
    without = tmp_path / "b.csv"
    without.write_text("1,2\n")
    npy = tmp_path / "c.npy"
    np.save(npy, np.arange(3, dtype=np.int16))
    np.testing.assert_array_equal(cli.load_rows(with_header), [[1, 2], [3, 4.5]])
    np.testing.assert_array_equal(cli.load_rows(without), [[1, 2]])
    np.testing.assert_array_equal(cli.load_rows(npy), [[0, 1, 2]])
    with pytest.raises(ValueError, match=r"\.npy or \.csv"):
        cli.load_rows(tmp_path / "d.parquet")


# -- tables ---------------------------------------------------------------------------------


def test_format_table_aligns_columns() -> None:
    text = cli.format_table(
        ("name", "samples", "builtin", "classes"),
        [("digits", 1797, True, 10), ("diabetes", 442, False, None)],
    )
    assert text.splitlines() == [
        "name      samples  builtin  classes",
        "--------  -------  -------  -------",
        "digits       1797  yes           10",
        "diabetes      442  no             -",
    ]


def test_format_table_without_rows_and_with_floats() -> None:
    assert cli.format_table(("a", "bb"), []).splitlines() == ["a  bb", "-  --"]
    assert cli.format_table(("x",), [(0.123456,)]).splitlines()[-1] == "0.1235"


def test_key_metric_prefers_accuracy_then_rounded_then_rmse() -> None:
    assert cli.key_metric({"accuracy": 0.9, "f1_macro": 0.8}) == ("accuracy", 0.9)
    assert cli.key_metric({"rmse": 2.1, "accuracy_rounded": 0.2}) == ("accuracy≈", 0.2)
    assert cli.key_metric({"rmse": 53.0, "r2": 0.45}) == ("RMSE", 53.0)
    assert cli.key_metric({"fit_seconds": 1.0}) is None


def test_markdown_table_right_aligns_numbers() -> None:
    text = format_markdown(("algorithm", "p50 ms"), [["cnn", "0.41"], ["svm", "0.20"]])
    assert text.splitlines() == [
        "| algorithm | p50 ms |",
        "| --- | ---: |",
        "| cnn | 0.41 |",
        "| svm | 0.20 |",
    ]

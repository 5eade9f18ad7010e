"""Every RPC validates: a table of bad requests, each with the status and the hint it gets.

Each case names the RPC and its request, the gRPC status the ARCHITECTURE.md table implies
and a fragment of the message that tells the caller what to fix. INTERNAL and UNKNOWN are
never right. Cases marked `small` run against a second server with tiny size limits. The
last test checks that the server still answers iris-lr as it did before the corpus ran.
"""

from __future__ import annotations

import functools
import io
import itertools
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import grpc
import numpy as np
import pytest

from service.gen.inference import grpc_predict_v2_pb2 as ipb
from service.gen.inference import grpc_predict_v2_pb2_grpc as igrpc
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from service.gen.paradigm.v1 import paradigm_pb2_grpc as pb_grpc
from tests.server import RunningServer

TIMEOUT = 60.0
_serial = itertools.count()
MODEL = "iris-lr"
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
EXISTS = grpc.StatusCode.ALREADY_EXISTS
Tensor = ipb.ModelInferRequest.InferInputTensor
IRIS_ROWS = np.array(
    [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32
)
# The small server's limits (Settings' minimum for max_message_bytes and max_model_bytes).
SMALL_MESSAGE_BYTES = 64 * 1024
SMALL_UPLOAD_BYTES = 4096
SMALL_MODEL_BYTES = 2048


class _Timed:
    """A generated stub whose every call carries a deadline: a hang fails, not waits."""

    def __init__(self, stub: object) -> None:
        self._stub = stub

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return functools.partial(getattr(self._stub, name), timeout=TIMEOUT)


class Api:
    """The stubs of one server."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.infer: Any = _Timed(igrpc.GRPCInferenceServiceStub(channel))
        self.datasets: Any = _Timed(pb_grpc.DatasetServiceStub(channel))
        self.algorithms: Any = _Timed(pb_grpc.AlgorithmServiceStub(channel))
        self.training: Any = _Timed(pb_grpc.TrainingServiceStub(channel))
        self.models: Any = _Timed(pb_grpc.ModelServiceStub(channel))
        self._channel = channel

    def raw(self, method: str, payload: bytes) -> object:
        """Sends bytes that need not parse as the method's request message."""
        return self._channel.unary_unary(method)(payload, timeout=TIMEOUT)

    def finished_job(self) -> str:
        jobs = self.training.ListJobs(pb.ListJobsRequest()).jobs
        return next(job.id for job in jobs if job.state == pb.JOB_STATE_SUCCEEDED)


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[Api], object]
    code: grpc.StatusCode
    fragment: str
    small: bool = False  # run against the server with tiny limits
    #: Why this case cannot pass yet (the fix lies outside this change): a strict xfail,
    #: so the day it passes the marker must go.
    xfail: str = ""


# -- request builders ---------------------------------------------------------------------


def raw_request(
    datatype: str = "FP32",
    shape: tuple[int, ...] = (2, 4),
    raw: bytes | None = None,
    *,
    model: str = MODEL,
    version: str = "",
    name: str = "input",
) -> ipb.ModelInferRequest:
    if raw is None:
        raw = np.zeros(shape, np.float32).tobytes()
    return ipb.ModelInferRequest(
        model_name=model,
        model_version=version,
        inputs=[Tensor(name=name, datatype=datatype, shape=shape)],
        raw_input_contents=[raw],
    )


def array_request(*arrays: tuple[str, np.ndarray], outputs: tuple[str, ...] = ()) -> Any:
    request = ipb.ModelInferRequest(model_name=MODEL)
    for name, array in arrays:
        request.inputs.add(name=name, datatype="FP32", shape=array.shape)
        request.raw_input_contents.append(np.ascontiguousarray(array, np.float32).tobytes())
    for output in outputs:
        request.outputs.add(name=output)
    return request


def typed_request(datatype: str, field: str, values: list[Any], shape: tuple[int, ...]) -> Any:
    tensor = Tensor(name="input", datatype=datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    return ipb.ModelInferRequest(model_name=MODEL, inputs=[tensor])


def infer(request: ipb.ModelInferRequest) -> Callable[[Api], object]:
    return lambda api: api.infer.ModelInfer(request)


def npz(compressed: bool = False, **arrays: Any) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def npz_claiming(rows: int) -> bytes:
    """A tiny .npz whose array headers claim `rows` rows: a decompression-bomb stand-in."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, shape in (("X", (rows, 4)), ("y", (rows,))):
            member = io.BytesIO()
            header = {"descr": "<f4", "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(member, header)  # type: ignore[no-untyped-call]
            archive.writestr(f"{name}.npy", member.getvalue() + b"\0" * 64)
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def corrupted(data: bytes) -> bytes:
    """data with its middle third inverted: the zip directory intact, the contents not."""
    third = len(data) // 3
    return data[:third] + bytes(b ^ 0xFF for b in data[third : 2 * third]) + data[2 * third :]


GOOD_NPZ = npz(X=np.arange(40, dtype=np.float32).reshape(20, 2), y=np.arange(20) % 2)
RANDOM_NPZ = npz(
    compressed=True,
    X=np.random.default_rng(0).normal(size=(200, 8)),
    y=np.arange(200) % 2,
)


def upload(
    data: bytes | None,
    name: str = "",
    *,
    fmt: Any = pb.DATASET_FORMAT_NPZ,
    label: str = "",
    task: Any = pb.TASK_UNSPECIFIED,
    chunk: int = 1024,
    before: tuple[pb.UploadDatasetRequest, ...] = (),
    after: tuple[pb.UploadDatasetRequest, ...] = (),
    kinds: dict[str, Any] | None = None,
) -> Callable[[Api], object]:
    # Each case its own name: one that wrongly succeeds must not turn the next into
    # ALREADY_EXISTS.
    name = name or f"bad-upload-{next(_serial)}"
    header = pb.UploadDatasetHeader(
        name=name, format=fmt, label_column=label, task=task, column_kinds=kinds or {}
    )

    def requests() -> Iterator[pb.UploadDatasetRequest]:
        yield from before
        yield pb.UploadDatasetRequest(header=header)
        for start in range(0, len(data or b""), chunk):
            yield pb.UploadDatasetRequest(chunk=(data or b"")[start : start + chunk])
        yield from after

    return lambda api: api.datasets.UploadDataset(requests())


def csv(
    text: str,
    label: str = "y",
    task: int = pb.TASK_UNSPECIFIED,
    kinds: dict[str, str | int] | None = None,
) -> Callable[[Api], object]:
    """A CSV upload; kinds by name ("numeric") or as a raw ColumnKind number."""
    numbers = {
        column: kind
        if isinstance(kind, int)
        else pb.ColumnKind.Value(f"COLUMN_KIND_{kind.upper()}")
        for column, kind in (kinds or {}).items()
    }
    return upload(text.encode(), fmt=pb.DATASET_FORMAT_CSV, label=label, task=task, kinds=numbers)


def import_model(
    data: bytes | None,
    name: str = "bad-import",
    *,
    fmt: Any = pb.MODEL_FORMAT_ONNX,
    paradigm: Any = pb.PARADIGM_UNSPECIFIED,
    n_features: int = 0,
    before: tuple[pb.ImportModelRequest, ...] = (),
    after: tuple[pb.ImportModelRequest, ...] = (),
) -> Callable[[Api], object]:
    header = pb.ImportModelHeader(name=name, format=fmt, paradigm=paradigm, n_features=n_features)

    def requests() -> Iterator[pb.ImportModelRequest]:
        yield from before
        yield pb.ImportModelRequest(header=header)
        for start in range(0, len(data or b""), 1024):
            yield pb.ImportModelRequest(chunk=(data or b"")[start : start + 1024])
        yield from after

    return lambda api: api.models.ImportModel(requests())


def import_exported_truncated(api: Api) -> object:
    """Exports iris-lr, cuts its ONNX file short and imports that."""
    request = pb.ExportModelRequest(name=MODEL)
    data = b"".join(m.chunk for m in api.models.ExportModel(request))
    return import_model(data[: len(data) // 2], "truncated-onnx")(api)


def train(
    dataset: str = "iris",
    algorithm: str = "logistic_regression",
    params: dict[str, pb.ParamValue] | None = None,
    **fields: Any,
) -> Callable[[Api], object]:
    request = pb.StartTrainingRequest(
        dataset=dataset, algorithm=algorithm, hyperparameters=params or {}, **fields
    )
    return lambda api: api.training.StartTraining(request)


def generate(name: str = "gen-bad", **fields: Any) -> Callable[[Api], object]:
    values = {"n_samples": 10, "image_size": 8, **fields}
    return lambda api: api.datasets.GenerateDataset(pb.GenerateDatasetRequest(name=name, **values))


def single_class_then_train(api: Api) -> object:
    """A one-class dataset: refused at upload, or at StartTraining, never as a FAILED job."""
    data = npz(X=np.random.default_rng(3).normal(size=(30, 2)), y=np.zeros(30, np.int64))
    upload(data, "one-class", chunk=1 << 16)(api)
    return train("one-class", "logistic_regression")(api)


def both_raw_and_typed() -> ipb.ModelInferRequest:
    request = raw_request()
    request.inputs[0].contents.fp32_contents.extend([0.0] * 8)
    return request


def watch(request: pb.WatchJobRequest) -> Callable[[Api], object]:
    return lambda api: list(api.training.WatchJob(request))


def set_alias(
    name: str, version: str, alias: str, gates: pb.PromotionGates | None = None
) -> Callable[[Api], object]:
    request = pb.SetAliasRequest(name=name, version=version, alias=alias, gates=gates)
    return lambda api: api.models.SetAlias(request)


def export(name: str, version: str = "") -> Callable[[Api], object]:
    return lambda api: list(
        api.models.ExportModel(pb.ExportModelRequest(name=name, version=version))
    )


def int_param(value: int) -> pb.ParamValue:
    return pb.ParamValue(int_value=value)


LONG = "a" * 10_000
ROW = np.zeros((1, 4), np.float32)

CASES = [
    # -- inference: unknown things ------------------------------------------------------
    Case("infer-unknown-model", infer(raw_request(model="nope")), NOT_FOUND, "'nope' not found"),
    Case("infer-unknown-version", infer(raw_request(version="7")), NOT_FOUND, "versions: ['1']"),
    Case("infer-unknown-alias", infer(raw_request(version="gold")), NOT_FOUND,
         "no version or alias 'gold'"),
    Case("infer-version-not-a-number-nor-alias", infer(raw_request(version="1.5")), NOT_FOUND,
         "versions are whole numbers"),
    Case("infer-version-superscript-digit", infer(raw_request(version="²")), NOT_FOUND,
         "no version '²'"),
    Case("infer-version-beyond-int64", infer(raw_request(version="9" * 30)), NOT_FOUND,
         "no version"),
    Case("infer-model-name-traversal", infer(raw_request(model="../iris-lr")), NOT_FOUND,
         "not found"),
    Case("infer-model-name-nul", infer(raw_request(model="iris\0lr")), NOT_FOUND, "not found"),
    Case("infer-model-name-10k", infer(raw_request(model=LONG)), INVALID,
         "model_name is 10000 characters long; the most accepted is 1024"),
    Case("infer-input-name-10k", infer(raw_request(name=LONG)), INVALID,
         "input name is 10000 characters long"),
    Case("metadata-name-10k",
         lambda api: api.infer.ModelMetadata(ipb.ModelMetadataRequest(name=LONG)),
         INVALID, "name is 10000 characters long"),
    Case("metadata-unknown-model",
         lambda api: api.infer.ModelMetadata(ipb.ModelMetadataRequest(name="nope")),
         NOT_FOUND, "'nope' not found"),
    Case("config-unknown-version",
         lambda api: api.infer.ModelConfig(ipb.ModelConfigRequest(name=MODEL, version="²")),
         NOT_FOUND, "no version"),
    # -- inference: datatypes, shapes, contents -----------------------------------------
    Case("infer-wrong-datatype", infer(raw_request("FP64", raw=b"\0" * 64)), INVALID,
         "datatype FP64; model expects FP32"),
    Case("infer-unknown-datatype", infer(raw_request("FLOAT")), INVALID, "'FLOAT' is not one of"),
    Case("infer-bytes-for-numbers",
         infer(raw_request("BYTES", (1, 1), b"\3\0\0\0abc")), INVALID,
         "datatype BYTES; model expects FP32"),
    Case("infer-bytes-bad-prefix", infer(raw_request("BYTES", (1, 1), b"\x09\x00")), INVALID,
         "truncated BYTES length prefix"),
    Case("infer-bytes-too-many", infer(raw_request("BYTES", (1, 1), b"\0\0\0\0" * 3)),
         INVALID, "more than 1 BYTES elements, shape needs 1"),
    Case("infer-not-a-protobuf",
         lambda api: api.raw("/inference.GRPCInferenceService/ModelInfer", b"\x0a\x02\xff\xfe"),
         INVALID, "ModelInferRequest"),
    Case("get-dataset-not-a-protobuf",
         lambda api: api.raw("/paradigm.v1.DatasetService/GetDataset", b"\xff\xff\xff"),
         INVALID, "GetDatasetRequest"),
    Case("infer-shape-mismatch", infer(array_request(("input", np.zeros((2, 5))))), INVALID,
         "shape [2, 5]; model expects [-1, 4]"),
    Case("infer-one-dimensional", infer(array_request(("input", np.zeros(4)))), INVALID,
         "model expects [-1, 4]"),
    Case("infer-ten-dims", infer(raw_request(shape=(1,) * 8 + (1, 4))), INVALID,
         "model expects [-1, 4]"),
    Case("infer-negative-dim", infer(raw_request(shape=(-5, 4), raw=b"")), INVALID,
         "negative dim"),
    Case("infer-absurd-dim", infer(raw_request(shape=(2**40, 4), raw=b"\0" * 32)), INVALID,
         "needs 17592186044416"),
    Case("infer-absurd-dims-around-zero",
         infer(raw_request(shape=(0, 2**62, 2**62), raw=b"")), INVALID, "too large"),
    Case("infer-too-many-dims", infer(raw_request(shape=(1,) * 70, raw=b"\0" * 4)), INVALID,
         "dims"),
    Case("infer-raw-length", infer(raw_request(raw=b"\0" * 31)), INVALID,
         "31 bytes of raw content, but shape [2, 4] of FP32 needs 32"),
    Case("infer-raw-and-typed", infer(both_raw_and_typed()), INVALID, "send all inputs one way"),
    Case("infer-raw-entries-count",
         lambda api: api.infer.ModelInfer(
             ipb.ModelInferRequest(
                 model_name=MODEL,
                 inputs=[Tensor(name="input", datatype="FP32", shape=[1, 4])],
                 raw_input_contents=[b"\0" * 16, b"\0" * 16],
             )
         ), INVALID, "2 entries for 1 inputs"),
    Case("infer-typed-count", infer(typed_request("FP32", "fp32_contents", [1.0] * 7, (2, 4))),
         INVALID, "7 values in fp32_contents, but shape [2, 4] needs 8"),
    Case("infer-typed-fp16", infer(typed_request("FP16", "fp32_contents", [1.0] * 4, (1, 4))),
         INVALID, "FP16 must be sent as raw bytes"),
    Case("infer-typed-overflow", infer(typed_request("UINT8", "uint_contents", [300] * 4, (1, 4))),
         INVALID, "does not fit UINT8"),
    Case("infer-missing-input", infer(ipb.ModelInferRequest(model_name=MODEL)), INVALID,
         "missing input 'input'"),
    Case("infer-extra-input", infer(array_request(("input", ROW), ("extra", ROW))), INVALID,
         "unexpected input 'extra'"),
    Case("infer-wrong-input-name", infer(raw_request(name="features")), INVALID,
         "expects: input FP32 [-1, 4]"),
    Case("infer-duplicate-input", infer(array_request(("input", ROW), ("input", ROW))), INVALID,
         "more than once"),
    Case("infer-unknown-output", infer(array_request(("input", ROW), outputs=("logits",))),
         INVALID, "unknown output 'logits'"),
    Case("infer-empty-batch", infer(raw_request(shape=(0, 4), raw=b"")), INVALID, "empty batch"),
    Case("infer-batch-over-limit", infer(array_request(("input", np.zeros((4097, 4))))),
         INVALID, "the most is 4096"),
    Case("infer-nan", infer(array_request(("input", np.full((1, 4), np.nan)))), INVALID,
         "NaN or infinity"),
    Case("infer-inf", infer(array_request(("input", np.full((1, 4), np.inf)))), INVALID,
         "NaN or infinity"),
    Case("infer-message-over-limit",
         infer(raw_request(shape=(8192, 4), raw=b"\0" * (8192 * 16))), EXHAUSTED,
         "larger than max", small=True),
    # -- datasets -----------------------------------------------------------------------
    Case("get-dataset-unknown", lambda api: api.datasets.GetDataset(pb.GetDatasetRequest(
        name="nope")), NOT_FOUND, "dataset 'nope' not found; datasets: "),
    Case("get-dataset-traversal", lambda api: api.datasets.GetDataset(pb.GetDatasetRequest(
        name="../datasets/iris")), NOT_FOUND, "not found"),
    Case("get-dataset-newline", lambda api: api.datasets.GetDataset(pb.GetDatasetRequest(
        name="iris\n")), NOT_FOUND, "not found"),
    Case("delete-dataset-unknown", lambda api: api.datasets.DeleteDataset(
        pb.DeleteDatasetRequest(name="nope")), NOT_FOUND, "dataset 'nope' not found"),
    Case("delete-dataset-builtin", lambda api: api.datasets.DeleteDataset(
        pb.DeleteDatasetRequest(name="iris")), INVALID, "built in"),
    Case("generate-unknown-generator", generate(generator="mnist"), INVALID,
         "generator 'mnist' is not one of ['digits_scaled', 'digits_scaled_images']"),
    Case("generate-zero-samples", generate(n_samples=0), INVALID, "between 1 and 200000"),
    Case("generate-absurd-samples", generate(n_samples=10**12), INVALID, "between 1 and 200000"),
    Case("generate-absurd-image", generate(image_size=100_000), INVALID, "between 8 and 64"),
    Case("generate-name-traversal", generate(name="../x"), INVALID, "dataset name '../x'"),
    Case("generate-existing-name", generate(name="iris"), EXISTS, "delete it first"),
    # -- uploads --------------------------------------------------------------------------
    Case("upload-no-messages", lambda api: api.datasets.UploadDataset(iter(())), INVALID,
         "first message of UploadDataset must be its header"),
    Case("upload-chunk-first", upload(GOOD_NPZ, before=(pb.UploadDatasetRequest(chunk=b"x"),)),
         INVALID, "first message of UploadDataset must be its header"),
    Case("upload-header-twice",
         upload(GOOD_NPZ, after=(pb.UploadDatasetRequest(header=pb.UploadDatasetHeader()),)),
         INVALID, "only the first message may be a header"),
    Case("upload-empty-file", upload(None), INVALID, "upload is empty"),
    Case("upload-format-unspecified", upload(GOOD_NPZ, fmt=pb.DATASET_FORMAT_UNSPECIFIED),
         INVALID, "DATASET_FORMAT_NPZ, DATASET_FORMAT_CSV, DATASET_FORMAT_PARQUET or "
         "DATASET_FORMAT_IMAGES"),
    Case("images-not-an-archive", upload(b"plain text", fmt=pb.DATASET_FORMAT_IMAGES),
         INVALID, "not a .zip, .tar or .tar.gz archive"),
    Case("images-npz-has-no-images", upload(GOOD_NPZ, fmt=pb.DATASET_FORMAT_IMAGES),
         INVALID, "no PNG, JPEG, BMP or GIF images (it holds 'X.npy', 'y.npy')"),
    Case("images-regression", upload(b"x", fmt=pb.DATASET_FORMAT_IMAGES, task=pb.TASK_REGRESSION),
         INVALID, "image archives are classification datasets"),
    Case("upload-task-unknown", upload(GOOD_NPZ, task=9), INVALID, "Task"),
    Case("upload-name-traversal", upload(GOOD_NPZ, "../evil"), INVALID, "dataset name '../evil'"),
    Case("upload-name-slash", upload(GOOD_NPZ, "a/b"), INVALID, "is not valid"),
    Case("upload-name-nul", upload(GOOD_NPZ, "a\0b"), INVALID, "is not valid"),
    Case("upload-name-newline", upload(GOOD_NPZ, "trailing-newline\n"), INVALID, "is not valid"),
    Case("upload-name-10k", upload(GOOD_NPZ, LONG), INVALID,
         "header.name is 10000 characters long"),
    Case("upload-name-65", upload(GOOD_NPZ, "a" * 65), INVALID, "use 1-64 lowercase letters"),
    Case("upload-name-taken", upload(GOOD_NPZ, "iris"), EXISTS, "'iris' already exists"),
    Case("csv-word-in-numeric-column", csv("a,b,y\n1,2,0\n3,x,1\n", kinds={"b": "numeric"}),
         INVALID, "column 'b' cannot be numeric: CSV line 3 holds 'x'"),
    Case("csv-kind-unknown", csv("a,y\n1,0\n2,1\n", kinds={"a": 9}), INVALID,
         "9 is not a ColumnKind"),
    Case("csv-kind-unspecified", csv("a,y\n1,0\n2,1\n", kinds={"a": 0}), INVALID,
         "0 is not a ColumnKind"),
    Case("csv-kind-for-missing-column", csv("a,y\n1,0\n2,1\n", kinds={"b": "text"}),
         INVALID, "column kinds given for 'b', which the file does not have"),
    Case("csv-kind-for-label", csv("a,y\n1,0\n2,1\n", kinds={"y": "text"}), INVALID,
         "is the label"),
    Case("csv-label-all-blank", csv("a,y\n1,\n2,NA\n"), INVALID, "blank in every row"),
    Case("parquet-damaged", upload(b"PAR1 not really", fmt=pb.DATASET_FORMAT_PARQUET,
                                   label="y"), INVALID, "not a readable Parquet file"),
    Case("csv-ragged", csv("a,b,y\n1,2,0\n1,2\n"), INVALID, "line 3 has 2 fields"),
    Case("csv-no-label-column", csv("a,b,y\n1,2,0\n", label=""), INVALID, "need label_column"),
    Case("csv-zero-rows", csv("a,b,y\n"), INVALID, "no data rows"),
    Case("csv-huge-field", csv("a,y\n" + "1" * 200_000 + ",0\n2,1\n"), INVALID, "line 2"),
    Case("csv-nul", csv("a,y\n1\0,0\n2,1\n"), INVALID, "line 2"),
    Case("csv-not-utf8", upload(b"a,y\n\xff\xfe,1\n", fmt=pb.DATASET_FORMAT_CSV, label="y"),
         INVALID, "UTF-8"),
    Case("csv-label-beyond-int64", csv("a,y\n1,1e300\n2,0\n", task=pb.TASK_CLASSIFICATION),
         INVALID, "whole-number class labels (at most 2**53 in size) or class names; y has 1e+300"),
    Case("csv-label-fraction", csv("a,y\n1,0.5\n2,0\n", task=pb.TASK_CLASSIFICATION),
         INVALID, "y has 0.5"),
    Case("csv-beyond-float32", csv("a,y\n1e300,0\n2,1\n"), INVALID,
         "line 2, column 'a': 1e+300 is beyond float32's range"),
    Case("npz-beyond-float32", upload(npz(X=np.full((2, 2), 1e300), y=np.arange(2))),
         INVALID, "beyond float32's range"),
    Case("upload-description-too-long",
         lambda api: api.datasets.UploadDataset(iter([pb.UploadDatasetRequest(
             header=pb.UploadDatasetHeader(name="long-text", description="d" * 70_000))])),
         INVALID, "header.description is 70000 characters long; the most accepted is 65536"),
    Case("csv-huge-header", csv(",".join(f"c{i}" for i in range(5000)) + "\n", label="y"),
         INVALID, "and 4980 more"),
    Case("npz-without-y", upload(npz(X=np.zeros((3, 2)))), INVALID, "missing ['y']"),
    Case("npz-length-mismatch", upload(npz(X=np.zeros((3, 2)), y=np.zeros(2))), INVALID,
         "one label per row of X (3)"),
    Case("npz-zero-rows", upload(npz(X=np.zeros((0, 4)), y=np.zeros(0))), INVALID,
         "X has no rows"),
    Case("npz-zero-features", upload(npz(X=np.zeros((5, 0)), y=np.arange(5))), INVALID,
         "no features"),
    Case("npz-zero-size-image", upload(npz(X=np.zeros((5, 0, 3)), y=np.arange(5))), INVALID,
         "no features"),
    Case("npz-complex", upload(npz(X=np.ones((4, 2), complex), y=np.arange(4) % 2)), INVALID,
         "X must be numeric (bool, integer or float); it has dtype complex128"),
    Case("npz-member-not-npy", upload(zipped({"X": b"\0" * 8, "y.npy": npy(np.zeros(1))})), INVALID,
         "not a numpy array"),
    Case("npz-object-arrays",
         upload(npz(X=np.array([{"a": 1}], dtype=object), y=np.zeros(1))), INVALID, "pickled"),
    Case("npz-single-class", single_class_then_train, INVALID, "at least two classes"),
    Case("npz-truncated", upload(GOOD_NPZ[: len(GOOD_NPZ) // 2]), INVALID,
         "not a readable .npz file"),
    Case("npz-corrupted", upload(corrupted(RANDOM_NPZ), chunk=1 << 16), INVALID,
         "not a readable .npz file"),
    Case("npz-not-a-zip", upload(b"not a zip at all"), INVALID, "not a readable .npz file"),
    Case("npz-claims-huge-arrays", upload(npz_claiming(10**12)), INVALID, "too large"),
    Case("upload-over-limit", upload(b"\0" * (SMALL_UPLOAD_BYTES + 1)), EXHAUSTED,
         f"exceeds the limit of {SMALL_UPLOAD_BYTES} bytes", small=True),
    # -- algorithms and training ----------------------------------------------------------
    Case("list-algorithms-unknown-paradigm",
         lambda api: api.algorithms.ListAlgorithms(pb.ListAlgorithmsRequest(paradigm=cast(Any, 7))),
         INVALID, "Paradigm"),
    Case("train-unknown-dataset", train("mnist"), NOT_FOUND, "dataset 'mnist' not found"),
    Case("train-dataset-traversal", train("../datasets/iris"), NOT_FOUND, "not found"),
    Case("train-unknown-algorithm", train(algorithm="logistic"), INVALID,
         "expected one of: linear_regression"),
    Case("train-unknown-hyperparameter", train(params={"max_iterations": int_param(5)}),
         INVALID, "unknown hyperparameter(s) 'max_iterations'"),
    Case("train-negative-epochs", train("digits", "mlp", {"epochs": int_param(-1)}), INVALID,
         "'epochs' of mlp got -1 (below the minimum); expected an integer in [1, 1000]"),
    Case("train-absurd-estimators",
         train(algorithm="random_forest", params={"n_estimators": int_param(10**9)}), INVALID,
         "above the maximum"),
    Case("train-wrong-param-type",
         train(algorithm="random_forest", params={"n_estimators": pb.ParamValue(
             string_value="many")}), INVALID, "expected an integer"),
    Case("train-nan-param",
         train(params={"C": pb.ParamValue(float_value=float("nan"))}), INVALID,
         "expected a number"),
    Case("train-empty-param", train(params={"C": pb.ParamValue()}), INVALID,
         "hyperparameter value is empty"),
    Case("train-unknown-task-enum", train(task=42), INVALID, "Task"),
    Case("train-unknown-device-enum", train(device=42), INVALID, "Device"),
    Case("train-test-fraction", train(test_fraction=2.0), INVALID, "between 0.05 and 0.9"),
    Case("train-test-fraction-nan", train(test_fraction=float("nan")), INVALID,
         "between 0.05 and 0.9"),
    Case("train-wrong-task", train("diabetes"), INVALID, "continuous"),
    Case("train-cnn-without-images", train(algorithm="cnn"), INVALID, "image"),
    Case("train-model-name-traversal", train(model_name="../etc"), INVALID, "model name '../etc'"),
    Case("train-model-name-slash", train(model_name="a/b"), INVALID, "is not valid"),
    Case("train-model-name-nul", train(model_name="a\0b"), INVALID, "is not valid"),
    Case("train-model-name-10k", train(model_name=LONG), INVALID,
         "model_name is 10000 characters long"),
    Case("train-model-name-129", train(model_name="a" * 129), INVALID, "use 1-128 letters"),
    Case("train-param-name-10k", train(params={LONG: int_param(1)}), INVALID,
         "hyperparameters key is 10000 characters long"),
    Case("train-param-value-10k", train(params={"C": pb.ParamValue(string_value=LONG)}),
         INVALID, "hyperparameters[...].string_value is 10000 characters long"),
    # -- jobs -----------------------------------------------------------------------------
    Case("get-job-10k", lambda api: api.training.GetJob(pb.GetJobRequest(id=LONG)),
         INVALID, "id is 10000 characters long"),
    Case("get-job-unknown", lambda api: api.training.GetJob(pb.GetJobRequest(id="zzz")),
         NOT_FOUND, "job 'zzz' not found"),
    Case("watch-job-unknown", watch(pb.WatchJobRequest(id="zzz")), NOT_FOUND, "not found"),
    Case("cancel-job-unknown", lambda api: api.training.CancelJob(pb.CancelJobRequest(id="")),
         NOT_FOUND, "job '' not found"),
    Case("cancel-finished-job",
         lambda api: api.training.CancelJob(pb.CancelJobRequest(id=api.finished_job())),
         PRECONDITION, "already ended: succeeded"),
    # -- models ---------------------------------------------------------------------------
    Case("get-model-unknown", lambda api: api.models.GetModel(pb.GetModelRequest(name="nope")),
         NOT_FOUND, "model 'nope' not found"),
    Case("get-model-unknown-version",
         lambda api: api.models.GetModel(pb.GetModelRequest(name=MODEL, version="3")),
         NOT_FOUND, "versions: ['1']"),
    Case("get-model-version-beyond-int64",
         lambda api: api.models.GetModel(pb.GetModelRequest(name=MODEL, version="9" * 30)),
         NOT_FOUND, "no version"),
    Case("delete-model-unknown",
         lambda api: api.models.DeleteModel(pb.DeleteModelRequest(name="../iris-lr")),
         NOT_FOUND, "not found"),
    Case("delete-model-odd-version",
         lambda api: api.models.DeleteModel(pb.DeleteModelRequest(name=MODEL, version="¹")),
         NOT_FOUND, "no version"),
    # -- aliases --------------------------------------------------------------------------
    Case("set-alias-unknown-model", set_alias("nope", "1", "champion"), NOT_FOUND,
         "model 'nope' not found"),
    Case("set-alias-unknown-version", set_alias(MODEL, "9", "champion"), NOT_FOUND,
         "versions: ['1']"),
    Case("set-alias-latest", set_alias(MODEL, "1", "latest"), INVALID,
         "'latest' always means the highest version"),
    Case("set-alias-number", set_alias(MODEL, "1", "2"), INVALID, "starting with a letter"),
    Case("set-alias-slash", set_alias(MODEL, "1", "a/b"), INVALID, "is not valid"),
    Case("set-alias-negative-epsilon",
         set_alias(MODEL, "1", "champion", pb.PromotionGates(metric_epsilon=-0.1)), INVALID,
         "metric_epsilon -0.1 must be 0 or more"),
    Case("set-alias-nan-budget",
         set_alias(MODEL, "1", "champion", pb.PromotionGates(max_p99_ms=float("nan"))),
         INVALID, "max_p99_ms and max_joules_per_1k must be 0 (none) or more"),
    Case("set-alias-too-many-probe-requests",
         set_alias(MODEL, "1", "champion", pb.PromotionGates(probe_requests=10**6)), INVALID,
         "probe_requests 1000000 must be between 0"),
    Case("delete-alias-unknown",
         lambda api: api.models.DeleteAlias(pb.DeleteAliasRequest(name=MODEL, alias="gold")),
         NOT_FOUND, "has no alias 'gold'"),
    Case("list-aliases-unknown-model",
         lambda api: api.models.ListAliases(pb.ListAliasesRequest(name="nope")),
         NOT_FOUND, "model 'nope' not found"),
    Case("list-aliases-alias-without-model",
         lambda api: api.models.ListAliases(pb.ListAliasesRequest(alias="champion")),
         INVALID, "name the model"),
    Case("export-model-unknown", export("nope"), NOT_FOUND, "model 'nope' not found"),
    Case("export-model-odd-version", export(MODEL, "²"), NOT_FOUND, "no version"),
    Case("import-not-onnx", import_model(b"hello, I am a text file\n" * 10), INVALID,
         "not an ONNX model"),
    Case("import-garbage-onnx", import_model(b"\x08\x07garbage"), INVALID, "not an ONNX model"),
    Case("import-truncated-onnx", import_exported_truncated, INVALID, "not an ONNX model"),
    Case("import-skops-not-zip", import_model(b"plain text", fmt=pb.MODEL_FORMAT_SKOPS),
         INVALID, "not a skops file"),
    Case("import-format-unspecified", import_model(b"x", fmt=pb.MODEL_FORMAT_UNSPECIFIED),
         INVALID, "MODEL_FORMAT_ONNX or MODEL_FORMAT_SKOPS"),
    Case("import-name-traversal", import_model(b"x", "../evil"), INVALID, "model name '../evil'"),
    Case("import-name-nul", import_model(b"x", "a\0b"), INVALID, "is not valid"),
    Case("import-name-10k", import_model(b"x", LONG), INVALID,
         "header.name is 10000 characters long"),
    Case("import-unknown-paradigm", import_model(b"x", paradigm=9), INVALID, "Paradigm"),
    Case("import-negative-features", import_model(b"x", fmt=pb.MODEL_FORMAT_SKOPS,
         n_features=-3), INVALID, "n_features"),
    Case("import-empty", import_model(None), INVALID, "import is empty"),
    Case("import-chunk-first",
         import_model(b"x", before=(pb.ImportModelRequest(chunk=b"x"),)), INVALID,
         "first message of ImportModel must be its header"),
    Case("import-header-twice",
         import_model(b"x", after=(pb.ImportModelRequest(header=pb.ImportModelHeader()),)),
         INVALID, "only the first message may be a header"),
    Case("import-over-model-limit", import_model(b"\0" * (SMALL_MODEL_BYTES + 1)), EXHAUSTED,
         f"exceeds the limit of {SMALL_MODEL_BYTES} bytes", small=True),
]  # fmt: skip


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = RunningServer(
        tmp_path_factory.mktemp("paradigm-small"),
        max_message_bytes=SMALL_MESSAGE_BYTES,
        max_upload_bytes=SMALL_UPLOAD_BYTES,
        max_model_bytes=SMALL_MODEL_BYTES,
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(channel: grpc.Channel, iris_model: str) -> Api:
    return Api(channel)


@pytest.fixture(scope="module")
def small_api(small_server: RunningServer) -> Iterator[Api]:
    with grpc.insecure_channel(small_server.target) as channel:
        yield Api(channel)


def predict(api: Api) -> np.ndarray:
    request = array_request(("input", IRIS_ROWS))
    response = api.infer.ModelInfer(request)
    index = [o.name for o in response.outputs].index("probabilities")
    return np.frombuffer(response.raw_output_contents[index], np.float32).copy()


@pytest.fixture(scope="module")
def before(api: Api) -> np.ndarray:
    """iris-lr's answer before any bad request was sent."""
    return predict(api)


def test_corpus_is_large_and_named_uniquely() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=case.id, marks=[pytest.mark.xfail(strict=True, reason=case.xfail)])
        if case.xfail
        else pytest.param(case, id=case.id)
        for case in CASES
    ],
)
def test_bad_request(case: Case, request: pytest.FixtureRequest, before: np.ndarray) -> None:
    api: Api = request.getfixturevalue("small_api" if case.small else "api")
    with pytest.raises(grpc.RpcError) as raised:
        case.call(api)
    error: Any = raised.value
    code, details = error.code(), error.details() or ""
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), details
    assert "Traceback" not in details, details
    assert code == case.code, f"{case.id}: {code.name} {details!r}"
    assert case.fragment in details, f"{case.id}: {details!r}"


def test_concurrent_uploads_of_one_name(api: Api) -> None:
    """One wins; the others get ALREADY_EXISTS, not INTERNAL from a lost rename race."""
    data = npz(X=np.random.default_rng(4).normal(size=(2000, 8)), y=np.arange(2000) % 3)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(upload(data, "raced", chunk=1 << 16), api) for _ in range(4)]
    codes = []
    for future in futures:
        error: Any = future.exception()
        codes.append(grpc.StatusCode.OK if error is None else error.code())
    assert sorted(code.name for code in codes) == ["ALREADY_EXISTS"] * 3 + ["OK"], codes
    api.datasets.DeleteDataset(pb.DeleteDatasetRequest(name="raced"))


def test_server_still_serves_after_the_corpus(api: Api, before: np.ndarray) -> None:
    after = predict(api)
    np.testing.assert_array_equal(after, before)
    assert after.shape == (9,) and np.allclose(after.reshape(3, 3).sum(axis=1), 1, atol=1e-5)
    names = {d.name for d in api.datasets.ListDatasets(pb.ListDatasetsRequest()).datasets}
    assert not {n for n in names if n.startswith("bad-upload")}
    assert not names & {"one-class", "gen-bad", "trailing-newline\n"}
    models = {m.name for m in api.models.ListModels(pb.ListModelsRequest()).models}
    assert not models & {"bad-import", "truncated-onnx", "../evil"}

"""Fuzzing every RPC with hypothesis: whatever arrives, the answer is OK or a status that
tells the caller what was wrong; never INTERNAL, UNKNOWN, a traceback or a hang.

Inference goes to the session server (it serves iris-lr); everything that creates or
deletes goes to a dedicated server with a one-job queue, so no other test's data is at
risk. A StartTraining that happens to be valid is rare by construction and cancelled at
once. Runs are derandomized, so CI sees the same examples every time; after fuzzing both
servers still answer as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from service.gen.inference import grpc_predict_v2_pb2 as ipb
from service.gen.inference import grpc_predict_v2_pb2_grpc as igrpc
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from service.gen.paradigm.v1 import paradigm_pb2_grpc as pb_grpc
from service.training.catalog import ALGORITHMS
from tests.server import RunningServer

MODEL = "iris-lr"
#: A call that takes longer has hung: DEADLINE_EXCEEDED fails the property.
TIMEOUT = 20.0
ALLOWED = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
IRIS_ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
DATATYPES = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip
CONTENT_FIELDS = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=8),
}


def fuzz(examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def answered(call: Callable[..., Any], request: Any, *, stream: bool = False) -> Any:
    """The call's answer, or None when it failed with an allowed status; fails otherwise."""
    try:
        result = call(request, timeout=TIMEOUT)
        return list(result) if stream else result
    except grpc.RpcError as raised:
        error: Any = raised
        code, details = error.code(), error.details() or ""
        assert code in ALLOWED, f"{code.name}: {details!r} for {request!r:.600}"
        assert details and "Traceback" not in details, details
        return None


class Stubs:
    def __init__(self, channel: grpc.Channel) -> None:
        self.infer = igrpc.GRPCInferenceServiceStub(channel)
        self.datasets = pb_grpc.DatasetServiceStub(channel)
        self.algorithms = pb_grpc.AlgorithmServiceStub(channel)
        self.training = pb_grpc.TrainingServiceStub(channel)
        self.models = pb_grpc.ModelServiceStub(channel)


@pytest.fixture(scope="module")
def serving(channel: grpc.Channel, iris_model: str) -> Stubs:
    """The session server, which serves iris-lr: read-only fuzzing only."""
    return Stubs(channel)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stubs]:
    """A server of its own for fuzzing that creates, deletes and queues jobs."""
    server = RunningServer(
        tmp_path_factory.mktemp("paradigm-fuzz"), max_queued_jobs=1, max_concurrent_jobs=1
    )
    try:
        with grpc.insecure_channel(server.target) as channel:
            yield Stubs(channel)
    finally:
        server.stop()


def predict(stubs: Stubs) -> np.ndarray:
    request = ipb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="input", datatype="FP32", shape=IRIS_ROWS.shape)
    request.raw_input_contents.append(IRIS_ROWS.tobytes())
    response = stubs.infer.ModelInfer(request, timeout=TIMEOUT)
    index = [o.name for o in response.outputs].index("probabilities")
    return np.frombuffer(response.raw_output_contents[index], np.float32).copy()


@pytest.fixture(scope="module")
def before(serving: Stubs) -> np.ndarray:
    return predict(serving)


# -- strategies ---------------------------------------------------------------------------

short_text = st.text(max_size=12)
model_names = st.sampled_from([MODEL] * 4 + ["", "nope", "../iris-lr", "iris-lr\n"]) | short_text
versions = (
    st.sampled_from(["", "", "1", "2", "0", "01", "²", "٣", "9" * 30, "-1", "1.0", " 1"])
    | short_text
)
names = st.sampled_from(["iris", "nope", "../iris", "iris\n", "", "a" * 65, "IRIS", "a/b"])
names = names | st.text(max_size=70)
dims = st.integers(-3, 6) | st.sampled_from([2**31, 2**40, 2**62, 2**63 - 1, -(2**63)])
int64s = st.integers(-(2**63), 2**63 - 1)
# Any: protobuf enums are open, so numbers beyond the declared values must be sent too.
enums: st.SearchStrategy[Any] = st.sampled_from([0, 1, 2, 1, 2, 3, 4, 99, -1]) | st.integers(
    -(2**31), 2**31 - 1
)


@st.composite
def tensors(draw: st.DrawFn) -> tuple[ipb.ModelInferRequest.InferInputTensor, bytes]:
    """An input tensor and raw bytes for it: nearly right (name "input", FP32, [n, 4],
    the exact byte count) or anything at all."""
    if draw(st.booleans()):
        rows = draw(st.integers(0, 3))
        shape = [rows, 4]
        tensor = ipb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=shape)
        raw = draw(st.binary(min_size=16 * rows, max_size=16 * rows))
    else:
        tensor = ipb.ModelInferRequest.InferInputTensor(
            name=draw(st.sampled_from(["input", "input", "features", ""]) | short_text),
            datatype=draw(st.sampled_from(DATATYPES) | st.sampled_from(["FLOAT", "", "fp32"])),
            shape=draw(st.lists(dims, max_size=5)),
        )
        raw = draw(st.binary(max_size=64))
    if draw(st.integers(0, 3)) == 0:  # typed contents, maybe of the wrong kind
        field = draw(st.sampled_from(sorted(CONTENT_FIELDS)))
        values = draw(st.lists(CONTENT_FIELDS[field], max_size=12))
        getattr(tensor.contents, field).extend(values)
    for key in draw(st.lists(short_text, max_size=2)):
        tensor.parameters[key].int64_param = draw(int64s)
    return tensor, raw


@st.composite
def infer_requests(draw: st.DrawFn) -> ipb.ModelInferRequest:
    request = ipb.ModelInferRequest(
        model_name=draw(model_names),
        model_version=draw(st.sampled_from(["", "", "1"]) | versions),
        id=draw(short_text),
    )
    drawn = draw(st.lists(tensors(), max_size=3))
    for tensor, _ in drawn:
        request.inputs.append(tensor)
    mode = draw(st.sampled_from(["raw", "raw", "typed", "odd"]))
    if mode == "raw":
        request.raw_input_contents.extend(raw for _, raw in drawn)
    elif mode == "odd":  # a count of raw entries that need not match the inputs
        request.raw_input_contents.extend(draw(st.lists(st.binary(max_size=32), max_size=4)))
    for name in draw(st.lists(st.sampled_from(["label", "probabilities", "logits"]), max_size=3)):
        request.outputs.add(name=name)
    for key in draw(st.lists(short_text, max_size=2)):
        request.parameters[key].string_param = draw(short_text)
    return request


param_values = st.one_of(
    st.builds(pb.ParamValue, int_value=int64s),
    st.builds(pb.ParamValue, int_value=st.integers(-5, 3000)),
    st.builds(pb.ParamValue, float_value=st.floats()),
    st.builds(pb.ParamValue, string_value=st.sampled_from(["rbf", "adam", "1e3", "10", "x"])),
    st.builds(pb.ParamValue, string_value=short_text),
    st.builds(pb.ParamValue, bool_value=st.booleans()),
    st.just(pb.ParamValue()),
)
hyperparameter_names = sorted({h.name for a in ALGORITHMS.values() for h in a.hyperparameters})


@st.composite
def training_requests(draw: st.DrawFn) -> pb.StartTrainingRequest:
    request = pb.StartTrainingRequest(
        dataset=draw(st.sampled_from(["iris", "digits", "diabetes", "nope", ""]) | short_text),
        algorithm=draw(st.sampled_from([*ALGORITHMS, "", "logistic"]) | short_text),
        hyperparameters=draw(
            st.dictionaries(
                st.sampled_from(hyperparameter_names) | short_text,
                param_values,
                min_size=1,
                max_size=3,
            )
            | st.just({})
        ),
        model_name=draw(st.sampled_from(["", "fuzzed", "../x", "a/b"]) | st.text(max_size=140)),
        task=draw(enums),
        device=draw(enums),
        test_fraction=draw(st.sampled_from([0.0, 0.25, 0.05, 0.9, 1.0, -0.1]) | st.floats()),
    )
    if draw(st.booleans()):
        request.seed = draw(int64s)
    return request


# -- properties ---------------------------------------------------------------------------


PENGUIN_COLUMNS = {
    "island": "BYTES", "bill_length_mm": "FP32", "bill_depth_mm": "FP32",
    "flipper_length_mm": "FP32", "body_mass_g": "FP32", "sex": "BYTES", "year": "FP32",
}  # fmt: skip


@pytest.fixture(scope="module")
def penguins_model(client: Any) -> str:
    """A table model (one input per column, words as BYTES) on the built-in penguins."""
    job = client.start_training("penguins", "logistic_regression", model_name="fuzz-penguins")
    client.wait_for_job(job.id)
    return "fuzz-penguins"


@st.composite
def column_requests(draw: st.DrawFn) -> ipb.ModelInferRequest:
    """Per-column requests: mostly the right names and datatypes with odd values (NaN,
    infinity, bytes that are not UTF-8, unequal lengths), sometimes anything."""
    request = ipb.ModelInferRequest(model_name="fuzz-penguins")
    rows = draw(st.integers(0, 3))
    for name, datatype in PENGUIN_COLUMNS.items():
        if draw(st.integers(0, 9)) == 0:
            continue  # a missing column
        datatype = draw(st.sampled_from([datatype] * 6 + ["FP64", "BOOL", "BYTES", "INT64"]))
        count = rows if draw(st.integers(0, 7)) else draw(st.integers(0, 4))
        shape = [count, 1] if draw(st.integers(0, 7)) else draw(st.lists(dims, max_size=3))
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if datatype == "BYTES":
            items = draw(st.lists(st.binary(max_size=6) | st.sampled_from([b"", b"Dream", b"\xff"]),
                                  min_size=count, max_size=count))  # fmt: skip
            tensor.contents.bytes_contents.extend(items)
        elif datatype in ("FP32", "FP64"):
            values = draw(st.lists(st.floats(width=32), min_size=count, max_size=count))
            getattr(tensor.contents, f"{datatype.lower()}_contents").extend(values)
        elif datatype == "BOOL":
            tensor.contents.bool_contents.extend([True] * count)
        else:
            tensor.contents.int64_contents.extend([1] * count)
    return request


@fuzz(150)
@given(request=column_requests())
def test_table_model_infer(penguins_model: str, serving: Stubs, request: Any) -> None:
    answered(serving.infer.ModelInfer, request)


@fuzz(1500)
@given(request=infer_requests())
def test_model_infer(serving: Stubs, before: np.ndarray, request: ipb.ModelInferRequest) -> None:
    response = answered(serving.infer.ModelInfer, request)
    if response is not None:
        assert response.model_name == MODEL and response.outputs


@fuzz(300)
@given(
    rpc=st.sampled_from(["ModelMetadata", "ModelReady", "ModelConfig"]),
    name=model_names,
    version=versions,
)
def test_model_lookups(serving: Stubs, rpc: str, name: str, version: str) -> None:
    request = getattr(ipb, f"{rpc}Request")(name=name, version=version)
    answered(getattr(serving.infer, rpc), request)


@fuzz(300)
@given(rpc=st.sampled_from(["GetModel", "ExportModel", "ListModels", "GetCostReport"]),
       name=model_names, version=versions)  # fmt: skip
def test_model_reads(
    serving: Stubs, channel: grpc.Channel, rpc: str, name: str, version: str
) -> None:
    if rpc == "GetCostReport":
        cost = pb_grpc.CostServiceStub(channel)
        answered(cost.GetCostReport, pb.GetCostReportRequest(model_name=name))
    elif rpc == "ListModels":
        answered(serving.models.ListModels, pb.ListModelsRequest(name=name, latest_only=True))
    elif rpc == "GetModel":
        answered(serving.models.GetModel, pb.GetModelRequest(name=name, version=version))
    else:
        request = pb.ExportModelRequest(name=name, version=version)
        answered(serving.models.ExportModel, request, stream=True)


@fuzz(200)
@given(paradigm=enums)
def test_list_algorithms(serving: Stubs, paradigm: Any) -> None:
    answer = answered(
        serving.algorithms.ListAlgorithms, pb.ListAlgorithmsRequest(paradigm=paradigm)
    )
    assert (answer is not None) == (paradigm in (0, 1, 2))


@fuzz(300)
@given(rpc=st.sampled_from(["GetDataset", "DeleteDataset"]), name=names)
def test_dataset_lookups(scratch: Stubs, rpc: str, name: str) -> None:
    request = getattr(pb, f"{rpc}Request")(name=name)
    answered(getattr(scratch.datasets, rpc), request)


@fuzz(200)
@example(name="fuzzed", generator="", n_samples=10, image_size=8, seed=-1)  # a valid one
@given(
    name=names,
    generator=st.sampled_from(["digits_scaled", "", "mnist"]) | short_text,
    n_samples=st.sampled_from([0, -1, 200_001, 2**62, -(2**63)]) | int64s,
    image_size=st.sampled_from([0, 7, 65, 10**6, -1]) | int64s,
    seed=int64s,
)
def test_generate_dataset(
    scratch: Stubs, name: str, generator: str, n_samples: int, image_size: int, seed: int
) -> None:
    request = pb.GenerateDatasetRequest(
        name=name, generator=generator, n_samples=n_samples, image_size=image_size, seed=seed
    )
    if answered(scratch.datasets.GenerateDataset, request) is not None:
        scratch.datasets.DeleteDataset(pb.DeleteDatasetRequest(name=name), timeout=TIMEOUT)


@fuzz(300)
@given(request=training_requests())
# Valid requests are rare by construction; these two make sure accept-then-cancel is run.
@example(request=pb.StartTrainingRequest(dataset="iris", algorithm="knn", model_name="fuzzed"))
@example(
    request=pb.StartTrainingRequest(
        dataset="digits", algorithm="mlp", hyperparameters={"epochs": pb.ParamValue(int_value=1)}
    )
)
def test_start_training(scratch: Stubs, request: pb.StartTrainingRequest) -> None:
    job = answered(scratch.training.StartTraining, request)
    if job is not None:  # valid by chance: do not let it use the CPU
        answered(scratch.training.CancelJob, pb.CancelJobRequest(id=job.id))


@fuzz(300)
@given(
    rpc=st.sampled_from(["GetJob", "CancelJob", "WatchJob"]),
    job_id=st.sampled_from(["", "zzz", "0" * 12, "finished"]) | st.text(max_size=30),
)
def test_jobs(scratch: Stubs, rpc: str, job_id: str) -> None:
    if job_id == "finished":  # a real job id; every job on this server has ended
        jobs = scratch.training.ListJobs(pb.ListJobsRequest(), timeout=TIMEOUT).jobs
        job_id = jobs[0].id if jobs else "none"
    request = getattr(pb, f"{rpc}Request")(id=job_id)
    answered(getattr(scratch.training, rpc), request, stream=rpc == "WatchJob")


@fuzz(200)
@given(name=model_names, version=versions)
def test_delete_model(scratch: Stubs, name: str, version: str) -> None:
    answered(scratch.models.DeleteModel, pb.DeleteModelRequest(name=name, version=version))


@st.composite
def upload_streams(draw: st.DrawFn) -> list[pb.UploadDatasetRequest]:
    header = pb.UploadDatasetHeader(
        name=draw(st.sampled_from(["fuzzed", "iris"]) | names),
        format=draw(enums),
        label_column=draw(st.sampled_from(["y", "a", ""]) | short_text),
        task=draw(enums),
    )
    chunks = [
        pb.UploadDatasetRequest(chunk=chunk)
        for chunk in draw(
            st.lists(st.binary(max_size=64) | st.text(max_size=64).map(str.encode), max_size=4)
        )
    ]
    messages = [pb.UploadDatasetRequest(header=header), *chunks]
    if draw(st.integers(0, 4)) == 0:  # a second header somewhere, or none first
        messages.insert(draw(st.integers(0, len(messages))), pb.UploadDatasetRequest(header=header))
    return messages


@fuzz(200)
@given(messages=upload_streams())
def test_upload_dataset(scratch: Stubs, messages: list[pb.UploadDatasetRequest]) -> None:
    dataset = answered(lambda request, timeout: scratch.datasets.UploadDataset(
        iter(request), timeout=timeout), messages)  # fmt: skip
    if dataset is not None:
        scratch.datasets.DeleteDataset(pb.DeleteDatasetRequest(name=dataset.name), timeout=TIMEOUT)


@st.composite
def import_streams(draw: st.DrawFn) -> list[pb.ImportModelRequest]:
    header = pb.ImportModelHeader(
        name=draw(st.sampled_from(["fuzzed", "../x"]) | st.text(max_size=140)),
        format=draw(enums),
        paradigm=draw(enums),
        task=draw(enums),
        n_features=draw(st.integers(-3, 10) | int64s),
        trusted_types=draw(st.lists(short_text, max_size=2)),
    )
    prefix = draw(st.sampled_from([b"", b"\x08\x07", b"\x08\x07:\x00", b"PK\x03\x04"]))
    body = draw(st.binary(max_size=96))
    return [pb.ImportModelRequest(header=header), pb.ImportModelRequest(chunk=prefix + body)]


@fuzz(200)
@given(messages=import_streams())
@example(  # passes the cheap checks (ir_version, an empty graph): a job, cancelled at once
    messages=[
        pb.ImportModelRequest(
            header=pb.ImportModelHeader(name="fuzzed", format=pb.MODEL_FORMAT_ONNX)
        ),
        pb.ImportModelRequest(chunk=b"\x08\x07:\x00"),
    ]
)
def test_import_model(scratch: Stubs, messages: list[pb.ImportModelRequest]) -> None:
    job = answered(lambda request, timeout: scratch.models.ImportModel(
        iter(request), timeout=timeout), messages)  # fmt: skip
    if job is not None:  # passed the cheap checks: the worker refuses it, or we cancel it
        answered(scratch.training.CancelJob, pb.CancelJobRequest(id=job.id))


def test_servers_still_serve_after_fuzzing(
    serving: Stubs, scratch: Stubs, before: np.ndarray
) -> None:
    np.testing.assert_array_equal(predict(serving), before)
    ready = serving.infer.ServerReady(ipb.ServerReadyRequest(), timeout=TIMEOUT)
    assert ready.ready
    listed = scratch.datasets.ListDatasets(pb.ListDatasetsRequest(), timeout=TIMEOUT).datasets
    assert {"iris", "digits", "diabetes"} <= {d.name for d in listed}
    # No job is left running or queued: each valid one was cancelled at once.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        jobs = scratch.training.ListJobs(pb.ListJobsRequest(), timeout=TIMEOUT).jobs
        if all(job.state not in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING) for job in jobs):
            break
        time.sleep(0.2)
    else:
        pytest.fail("jobs still running after fuzzing")
    assert all(not job.error.startswith("internal error") for job in jobs)

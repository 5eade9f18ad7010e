"""OpenTelemetry traces over real OTLP: a `paradigm-server` process configured by OTEL_*
variables exports to a TraceService receiver this test runs on loopback."""

from __future__ import annotations

import functools
import itertools
import json
import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from clients.client import ParadigmClient, make_infer_request
from clients.harness import free_port, paradigm_server
from clients.otlp import ReceivedSpan, RunningReceiver, children, running_receiver, tree
from service import tracing
from service.gen.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from service.gen.paradigm.v1 import paradigm_pb2_grpc as pb_grpc


def traceparent() -> tuple[str, str, str]:
    """A caller's W3C traceparent, sampled: (header, trace id, span id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


@pytest.fixture(scope="module")
def receiver() -> Iterator[RunningReceiver]:
    yield from running_receiver()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, receiver: RunningReceiver) -> Iterator[dict]:
    workdir = tmp_path_factory.mktemp("traced")
    http_port = free_port()
    with (
        paradigm_server(
            workdir,
            "traced",
            workdir / "data",
            env=receiver.environment(),
            args=["--http-port", str(http_port)],
        ) as process,
        ParadigmClient(process.target, timeout=300) as client,
    ):
        client.wait_until_ready(30)
        yield {"target": process.target, "http": f"http://127.0.0.1:{http_port}",
               "client": client, "log": process.log}  # fmt: skip


@pytest.fixture(scope="module")
def digits_model(server: dict) -> str:
    client: ParadigmClient = server["client"]
    job = client.start_training("digits", "logistic_regression", model_name="traced-logreg")
    client.wait_for_job(job.id)
    return "traced-logreg"


def has_span(trace_id: str, name: str, spans: list[ReceivedSpan]) -> bool:
    return any(s.trace_id == trace_id and s.name == name for s in spans)


def has_child(trace_id: str, parent_span_id: str, spans: list[ReceivedSpan]) -> bool:
    return any(s.trace_id == trace_id and s.parent_span_id == parent_span_id for s in spans)


def one_named(spans: list[ReceivedSpan], name: str, trace_id: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name and s.trace_id == trace_id]
    assert len(found) == 1, (name, [s.name for s in spans if s.trace_id == trace_id])
    return found[0]


def assert_inference_tree(spans: list[ReceivedSpan], root: ReceivedSpan) -> None:
    names = [child.name for child in children(spans, root)]
    assert names == ["queue wait", "run", "encode"], names
    run = next(child for child in children(spans, root) if child.name == "run")
    assert run.attributes["paradigm.batch.rows"] == 1
    assert run.attributes["paradigm.batch.requests"] == 1
    assert run.attributes["paradigm.model"] == "traced-logreg"


def test_model_infer_continues_the_callers_trace(
    server: dict, receiver: RunningReceiver, digits_model: str
) -> None:
    header, trace_id, caller_span = traceparent()
    rows = np.zeros((1, 64), np.float32)
    with grpc.insecure_channel(server["target"]) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        stub.ModelInfer(
            make_infer_request(digits_model, rows), metadata=[("traceparent", header)], timeout=30
        )
    name = "inference.GRPCInferenceService/ModelInfer"
    spans = receiver.receiver.wait_for(
        lambda spans: (
            any(s.trace_id == trace_id and s.name == "encode" for s in spans)
            and any(s.trace_id == trace_id and s.name == name for s in spans)
        )
    )
    root = one_named(spans, name, trace_id)
    assert root.parent_span_id == caller_span
    assert root.attributes["rpc.system"] == "grpc"
    assert root.attributes["rpc.grpc.status_code"] == 0
    assert root.service == "paradigm-test"
    assert_inference_tree(spans, root)
    print("\n" + tree(spans, root))


def test_rest_infer_continues_the_callers_trace(
    server: dict, receiver: RunningReceiver, digits_model: str
) -> None:
    header, trace_id, caller_span = traceparent()
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                        "data": [0.0] * 64}]}  # fmt: skip
    request = urllib.request.Request(
        f"{server['http']}/v2/models/{digits_model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "traceparent": header},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200
    name = "POST /v2/models/{model}/infer"
    spans = receiver.receiver.wait_for(
        lambda spans: any(s.trace_id == trace_id and s.name == name for s in spans)
    )
    root = one_named(spans, name, trace_id)
    assert root.parent_span_id == caller_span
    assert root.attributes["http.response.status_code"] == 200
    assert_inference_tree(spans, root)
    print("\n" + tree(spans, root))


def test_a_bad_request_is_traced_but_not_an_error(server: dict, receiver: RunningReceiver) -> None:
    header, trace_id, _ = traceparent()
    with grpc.insecure_channel(server["target"]) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(
                make_infer_request("no-such-model", np.zeros((1, 4), np.float32)),
                metadata=[("traceparent", header)],
                timeout=30,
            )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    name = "inference.GRPCInferenceService/ModelInfer"
    spans = receiver.receiver.wait_for(
        lambda spans: any(s.trace_id == trace_id and s.name == name for s in spans)
    )
    root = one_named(spans, name, trace_id)
    assert root.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert root.status_code != 2  # STATUS_CODE_ERROR: the caller's mistake, not the server's


def test_training_job_tree(server: dict, receiver: RunningReceiver) -> None:
    header, trace_id, caller_span = traceparent()
    request = pb.StartTrainingRequest(
        dataset="digits", algorithm="mlp", model_name="traced-mlp", test_fraction=0.2
    )
    request.hyperparameters["epochs"].int_value = 2
    with grpc.insecure_channel(server["target"]) as channel:
        stub = pb_grpc.TrainingServiceStub(channel)
        job = stub.StartTraining(request, metadata=[("traceparent", header)], timeout=30)
    server["client"].wait_for_job(job.id)
    spans = receiver.receiver.wait_for(
        lambda spans: any(s.trace_id == trace_id and s.name == "train job" for s in spans)
    )
    rpc = one_named(spans, "paradigm.v1.TrainingService/StartTraining", trace_id)
    assert rpc.parent_span_id == caller_span
    root = one_named(spans, "train job", trace_id)
    assert root.parent_span_id == rpc.span_id
    assert root.attributes["paradigm.job.id"] == job.id
    assert root.attributes["paradigm.job.state"] == "succeeded"
    phases = children(spans, root)
    names = [span.name for span in phases]
    assert names == [
        "queued", "start worker", "load", "fit", "evaluate", "export", "parity", "publish"
    ], names  # fmt: skip
    for earlier, later in itertools.pairwise(phases):
        assert earlier.end_ns <= later.start_ns + 1
    fit = phases[names.index("fit")]
    epochs = [attributes for name, attributes in fit.events if name == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all("metric.loss" in e for e in epochs), epochs
    print("\n" + tree(spans, rpc))


def test_off_unless_the_environment_asks() -> None:
    assert not tracing.requested({})
    assert not tracing.requested({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"})
    assert tracing.requested({"OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing.requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert not tracing.requested(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "none"}
    )
    assert not tracing.requested({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"})


def test_log_says_traces_are_on(server: dict) -> None:
    assert "OpenTelemetry traces on" in Path(server["log"]).read_text()


def test_forwarded_control_plane_calls_keep_the_trace(
    tmp_path: Path, receiver: RunningReceiver
) -> None:
    """With --workers 2 a follower forwards ListAlgorithms to the owner: the owner's span is
    the follower's child, itself the caller's."""
    name = "paradigm.v1.AlgorithmService/ListAlgorithms"
    with paradigm_server(
        tmp_path, "traced-workers", tmp_path / "data", env=receiver.environment(),
        args=["--workers", "2"],
    ) as server:  # fmt: skip
        for _ in range(40):  # each call on its own connection: the kernel picks the worker
            header, trace_id, caller_span = traceparent()
            options = [("grpc.use_local_subchannel_pool", 1)]
            with grpc.insecure_channel(server.target, options=options) as channel:
                pb_grpc.AlgorithmServiceStub(channel).ListAlgorithms(
                    pb.ListAlgorithmsRequest(), metadata=[("traceparent", header)], timeout=30
                )
            # The span the caller's call made: the follower's, or the owner's if it went there.
            spans = receiver.receiver.wait_for(functools.partial(has_child, trace_id, caller_span))
            first = next(
                s for s in spans if s.trace_id == trace_id and s.parent_span_id == caller_span
            )
            if first.attributes.get("paradigm.forwarded_to_owner"):
                break
        else:
            pytest.fail("no call reached the follower in 40 tries")
        spans = receiver.receiver.wait_for(
            lambda spans: sum(s.trace_id == trace_id and s.name == name for s in spans) == 2
        )
    follower = one_named([s for s in spans if s.parent_span_id == caller_span], name, trace_id)
    owner = one_named([s for s in spans if s.parent_span_id == follower.span_id], name, trace_id)
    assert owner.span_id != follower.span_id


def test_ratio_sampling_drops_untraced_requests_and_keeps_sampled_callers(
    tmp_path: Path, receiver: RunningReceiver
) -> None:
    """parentbased_traceidratio at 0: a request without a trace, or with an unsampled one,
    makes no span; one whose caller sampled its trace still does."""
    name = "paradigm.v1.AlgorithmService/ListAlgorithms"
    env = receiver.environment(
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0",
        OTEL_SERVICE_NAME="paradigm-ratio-0",
    )
    with paradigm_server(tmp_path, "ratio-0", tmp_path / "data", env=env) as server:
        header, trace_id, caller_span = traceparent()
        unsampled = header[:-2] + "00"
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.AlgorithmServiceStub(channel)
            stub.ListAlgorithms(pb.ListAlgorithmsRequest(), timeout=30)
            stub.ListAlgorithms(
                pb.ListAlgorithmsRequest(), metadata=[("traceparent", unsampled)], timeout=30
            )
            stub.ListAlgorithms(
                pb.ListAlgorithmsRequest(), metadata=[("traceparent", header)], timeout=30
            )
        spans = receiver.receiver.wait_for(functools.partial(has_span, trace_id, name))
    mine = [s for s in spans if s.service == "paradigm-ratio-0"]
    assert [(s.name, s.parent_span_id) for s in mine] == [(name, caller_span)]


def test_a_batch_writes_its_run_into_every_sampled_requests_trace(
    receiver: RunningReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One slot, a slow first run: the next three requests queue and run as one batch; each
    of their traces gets a `run` span saying it served 3 requests of 3 rows."""
    import asyncio
    import time

    from service.serving.batcher import Batcher, BatchingConfig

    for key, value in receiver.environment(OTEL_SERVICE_NAME="paradigm-batcher").items():
        monkeypatch.setenv(key, value)
    assert tracing.configure()
    try:

        def run(feeds: dict, outputs: list, rows: int, enqueued: list) -> list:
            time.sleep(0.2)
            return [feeds["x"] * 2]

        async def scenario() -> list[tuple[str, str]]:
            loop = asyncio.get_running_loop()
            batcher = Batcher(
                "m", ["x"], ["y"], run,
                lambda run, *args: loop.run_in_executor(None, run, *args),
                BatchingConfig(), slots=1, observe=tracing.RunObserver("m", "1"),
            )  # fmt: skip
            callers = [traceparent() for _ in range(4)]

            async def request(header: str, delay: float) -> None:
                await asyncio.sleep(delay)
                span = tracing.start_server_span("request", header, None, {})
                assert span is not None
                token = tracing.activate(span)
                try:
                    await batcher.submit({"x": np.ones((1, 2), np.float32)}, 1, None)
                finally:
                    tracing.deactivate(token)
                    span.end()

            await asyncio.gather(
                *(
                    request(header, 0.0 if i == 0 else 0.05)
                    for i, (header, _, _) in enumerate(callers)
                )
            )
            batcher.close()
            return [(trace_id, span_id) for _, trace_id, span_id in callers]

        callers = asyncio.run(scenario())
        spans = receiver.receiver.wait_for(
            lambda spans: (
                sum(s.service == "paradigm-batcher" and s.name == "run" for s in spans) == 4
            )
        )
    finally:
        tracing.shutdown()
    runs = {s.trace_id: s for s in spans if s.service == "paradigm-batcher" and s.name == "run"}
    assert runs[callers[0][0]].attributes["paradigm.batch.requests"] == 1
    for trace_id, _ in callers[1:]:
        assert runs[trace_id].attributes["paradigm.batch.requests"] == 3
        assert runs[trace_id].attributes["paradigm.batch.rows"] == 3
        request = one_named(spans, "request", trace_id)
        assert [c.name for c in children(spans, request)] == ["queue wait", "run"]

"""Shadows against a real server: agreement, feedback, failing and slow shadows, the report."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from sklearn.datasets import load_digits

from clients.client import ParadigmClient, ParadigmClientError
from clients.harness import paradigm_server
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from tests.server import RunningServer
from tests.test_cli import paradigm
from tests.test_workers import fresh

ALIAS = "champion"


@pytest.fixture(scope="module")
def shadow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # One shadow run at a time and a queue of one: a slow shadow must drop, not queue.
    running = RunningServer(
        tmp_path_factory.mktemp("shadow-data"), shadow_queue_size=1, shadow_tasks=1
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def shadow_client(shadow_server: RunningServer) -> Iterator[ParadigmClient]:
    with ParadigmClient(shadow_server.target, timeout=120) as client:
        client.wait_until_ready(30)
        yield client


def _train(client: ParadigmClient, algorithm: str, name: str, **options: object) -> str:
    job = client.start_training("digits", algorithm, model_name=name, seed=0, **options)  # type: ignore[arg-type]
    client.wait_for_job(job.id)
    return name


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return data.data.astype(np.float32), data.target


@pytest.fixture(scope="module")
def primary(shadow_client: ParadigmClient) -> str:
    name = _train(shadow_client, "logistic_regression", "shadow-lr")
    shadow_client.set_alias(name, "1", ALIAS)
    return name


def _labels(result: object) -> list[str]:
    values = result.as_numpy("label").reshape(-1).tolist()  # type: ignore[attr-defined]
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _wait(check: Callable[[], pb.ShadowReport | None], seconds: float = 60) -> pb.ShadowReport:
    """Polls until check() returns a report (the shadow runs after the answers went out)."""
    give_up = time.monotonic() + seconds
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > give_up:
            raise AssertionError(f"the shadow report never reached the expected state: {found}")
        time.sleep(0.05)


def _settled(client: ParadigmClient, name: str, sampled: int) -> pb.ShadowReport:
    """The report once every sampled request was shadowed, dropped or failed."""

    def check() -> pb.ShadowReport | None:
        report = client.shadow_report(name, ALIAS)
        seen.append(report)
        done = sum(p.shadowed + p.dropped + p.failed for p in report.pairs)
        return report if sum(p.sampled for p in report.pairs) >= sampled == done else None

    seen: list[pb.ShadowReport] = []
    try:
        return _wait(check)
    except AssertionError as failed:
        raise AssertionError(f"{failed}; last report: {seen[-1] if seen else None}") from None


def test_full_rate_shadow_records_agreement_and_feedback_gives_accuracy(
    shadow_client: ParadigmClient, primary: str, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    client = shadow_client
    shadow = _train(client, "naive_bayes", "shadow-nb")
    made = client.set_shadow(primary, ALIAS, shadow, sample_rate=1.0)
    assert made.shadow_model == shadow and made.sample_rate == 1.0
    assert [s.alias for s in client.list_shadows(primary)] == [ALIAS]
    rows, truth = digits
    batches = [rows[i : i + 50] for i in range(0, 250, 50)]
    ids = []
    for number, batch in enumerate(batches):
        # Requests with an id keep it; one without gets one, returned as the response's id.
        given = f"req-{number}" if number % 2 == 0 else ""
        result = client.infer(primary, batch, version=ALIAS, request_id=given)
        assert result.model_name == primary and result.model_version == "1"
        # The primary's answer, exactly as without a shadow.
        assert _labels(result) == _labels(client.infer(primary, batch, version="1"))
        assert result.id and (result.id == given or not given)
        assert result.parameters["request_id"] == result.id
        ids.append(result.id)
        # The shadow runs within its CPU budget and this server's queue holds one run:
        # wait for it, so that every request of this test is compared.
        _settled(client, primary, number + 1)
    report = _settled(client, primary, len(batches))
    (pair,) = report.pairs
    assert (pair.primary, pair.shadow) == (f"{primary}:1", f"{shadow}:latest")
    assert pair.sampled == pair.shadowed == len(batches) and pair.dropped == pair.failed == 0
    # Agreement is what the two models answer alike, row by row.
    a = np.array(_labels(client.infer(primary, rows[:250])))
    b = np.array(_labels(client.infer(shadow, rows[:250])))
    assert pair.compared_rows == 250
    assert pair.agreeing_rows == int((a == b).sum())
    assert pair.agreement == pytest.approx((a == b).mean())
    assert pair.primary_figures.p99_seconds > 0 and pair.shadow_figures.p99_seconds > 0
    assert pair.primary_figures.cost_per_1k["dollars"] > 0
    assert pair.shadow_figures.cost_per_1k["dollars"] > 0

    # Feedback turns agreement into accuracy for both, on the rows it covers.
    done = client.submit_feedback(ids[0], [str(t) for t in truth[:50]])
    assert done.rows == 50
    assert done.primary_correct == int((a[:50] == truth[:50].astype(str)).sum())
    assert done.shadow_correct == int((b[:50] == truth[:50].astype(str)).sum())
    done = client.submit_feedback(ids[1], [str(t) for t in truth[50:100]])
    report = client.shadow_report(primary, ALIAS)
    (pair,) = report.pairs
    assert pair.primary_figures.feedback_rows == pair.shadow_figures.feedback_rows == 100
    assert pair.primary_figures.accuracy == pytest.approx(
        (a[:100] == truth[:100].astype(str)).mean()
    )
    assert pair.shadow_figures.accuracy == pytest.approx(
        (b[:100] == truth[:100].astype(str)).mean()
    )
    # Once per request; an unknown id and a wrong row count are refused clearly.
    with pytest.raises(ParadigmClientError) as again:
        client.submit_feedback(ids[0], [str(t) for t in truth[:50]])
    assert again.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ParadigmClientError) as short:
        client.submit_feedback(ids[2], ["1"])
    assert short.value.code == grpc.StatusCode.INVALID_ARGUMENT
    client.clear_shadow(primary, ALIAS)


def test_report_through_the_cli(
    shadow_server: RunningServer, shadow_client: ParadigmClient, primary: str
) -> None:
    shadow = _train(shadow_client, "naive_bayes", "shadow-cli-nb")
    made = paradigm(shadow_server, "shadow", "set", f"{primary}:{ALIAS}", f"{shadow}:1")
    assert made.returncode == 0, made.stderr
    rows = load_digits().data.astype(np.float32)[:20]
    shadow_client.infer(primary, rows, version=ALIAS)
    _wait(
        lambda: next(
            (
                r
                for r in [shadow_client.shadow_report(primary, ALIAS)]
                if any(p.shadow == f"{shadow}:1" and p.shadowed for p in r.pairs)
            ),
            None,
        )
    )
    report = paradigm(shadow_server, "shadow", "report", f"{primary}:{ALIAS}")
    assert report.returncode == 0, report.stderr
    assert f"shadowed by {shadow}:1" in report.stdout
    assert f"{primary}:1 (primary) vs {shadow}:1 (shadow)" in report.stdout
    assert "agreement:" in report.stdout and "p99 ms" in report.stdout
    listed = paradigm(shadow_server, "shadow", "list")
    assert listed.returncode == 0 and shadow in listed.stdout
    cleared = paradigm(shadow_server, "shadow", "clear", f"{primary}:{ALIAS}")
    assert cleared.returncode == 0, cleared.stderr


def test_failing_shadow_never_touches_the_primary(
    shadow_client: ParadigmClient, primary: str, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    client = shadow_client
    gone = _train(client, "naive_bayes", "shadow-gone")
    client.set_shadow(primary, ALIAS, gone, version="1")
    client.delete_model(gone, force=True)
    rows, _ = digits
    before = client.shadow_report(primary, ALIAS)
    failed_before = sum(p.failed for p in before.pairs)
    for start in range(0, 60, 20):
        batch = rows[start : start + 20]
        result = client.infer(primary, batch, version=ALIAS)
        assert _labels(result) == _labels(client.infer(primary, batch, version="1"))

    def failed() -> pb.ShadowReport | None:
        report = client.shadow_report(primary, ALIAS)
        return report if sum(p.failed for p in report.pairs) >= failed_before + 3 else None

    report = _wait(failed)
    assert all(p.shadowed == 0 for p in report.pairs if p.shadow == f"{gone}:1")
    client.clear_shadow(primary, ALIAS)


def test_slow_shadow_is_dropped_not_waited_for(
    shadow_client: ParadigmClient, primary: str, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    client = shadow_client
    # Hundreds of deep trees over every row: far slower per request than the primary.
    slow = _train(client, "random_forest", "shadow-slow-rf", hyperparameters={"n_estimators": 400})
    client.set_shadow(primary, ALIAS, slow)
    rows, _ = digits
    expected = _labels(client.infer(primary, rows, version="1"))
    requests = 24
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda _: client.infer(primary, rows, version=ALIAS), range(requests))
        )
    # Every answer is the primary's own, whatever the shadow's queue did.
    assert all(_labels(result) == expected for result in results)
    report = _wait(
        lambda: next(
            (
                r
                for r in [client.shadow_report(primary, ALIAS)]
                for p in r.pairs
                if p.shadow == f"{slow}:latest"
                and p.sampled == p.shadowed + p.dropped + p.failed
                and p.sampled >= requests
            ),
            None,
        ),
        seconds=120,
    )
    (pair,) = [p for p in report.pairs if p.shadow == f"{slow}:latest"]
    # A queue of one behind one shadow task: most were dropped, none failed.
    assert pair.dropped >= 1 and pair.failed == 0 and pair.shadowed >= 1
    client.clear_shadow(primary, ALIAS)


def test_shadow_requests_refused_clearly(shadow_client: ParadigmClient, primary: str) -> None:
    client = shadow_client
    cases = [
        (lambda: client.set_shadow(primary, "nosuch", primary), grpc.StatusCode.NOT_FOUND),
        (lambda: client.set_shadow(primary, ALIAS, "no-model"), grpc.StatusCode.NOT_FOUND),
        (
            lambda: client.set_shadow(primary, ALIAS, primary, sample_rate=0.0),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (lambda: client.clear_shadow(primary, ALIAS), grpc.StatusCode.NOT_FOUND),
        (lambda: client.submit_feedback("never-seen", ["1"]), grpc.StatusCode.NOT_FOUND),
        (lambda: client.shadow_report("no-model", ALIAS), grpc.StatusCode.NOT_FOUND),
    ]
    for call, code in cases:
        with pytest.raises(ParadigmClientError) as refused:
            call()
        assert refused.value.code == code, refused.value.details


def test_deleting_the_alias_removes_its_shadow(
    shadow_client: ParadigmClient, primary: str, tmp_path: Path
) -> None:
    client = shadow_client
    client.set_alias(primary, "1", "temp")
    client.set_shadow(primary, "temp", primary, version="1", sample_rate=0.5)
    assert any(s.alias == "temp" for s in client.list_shadows(primary))
    client.delete_alias(primary, "temp")
    assert not any(s.alias == "temp" for s in client.list_shadows(primary))


def test_workers_each_shadow_their_traffic_and_the_report_adds_up(tmp_path: Path) -> None:
    http_port_file = tmp_path / "http.port"
    args = ["--workers", "2", "--http-port", "0", "--http-port-file", str(http_port_file)]
    rows = load_digits().data.astype(np.float32)[:10]
    with paradigm_server(tmp_path, "shadow-workers", tmp_path / "data", args=args) as server:
        with fresh(server.target) as client:
            name = _train(client, "logistic_regression", "w-lr")
            shadow = _train(client, "naive_bayes", "w-nb")
            client.set_alias(name, "1", ALIAS)
            client.set_shadow(name, ALIAS, shadow)
        grpc_requests = 16
        for _ in range(grpc_requests):
            with fresh(server.target) as client:  # own connections: spread over workers
                assert client.infer(name, rows, version=ALIAS).model_version == "1"
        # REST requests through the alias are shadowed the same way.
        http = f"http://127.0.0.1:{http_port_file.read_text().strip()}"
        body = json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape),
                         "data": rows.ravel().tolist()}]}
        ).encode()  # fmt: skip
        rest_requests = 4
        for _ in range(rest_requests):
            request = urllib.request.Request(
                f"{http}/v2/models/{name}/versions/{ALIAS}/infer", data=body, method="POST"
            )
            with urllib.request.urlopen(request, timeout=30) as answer:
                assert json.load(answer)["model_version"] == "1"
        total = grpc_requests + rest_requests
        with fresh(server.target) as client:
            report = _settled(client, name, total)
        (pair,) = report.pairs
        assert pair.sampled == pair.shadowed == total
        assert pair.compared_rows == total * len(rows)

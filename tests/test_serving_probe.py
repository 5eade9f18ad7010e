"""service/serving/probe.py against a real server: it serves through the data plane and
its bill is the cost ledger's own."""

from __future__ import annotations

import numpy as np
import pytest

from clients.client import ParadigmClient
from service.cost.ledger import ServingTotals
from service.errors import InvalidArgument, NotFound
from service.serving.probe import WARMUP_REQUESTS, ServingProbe, probe_serving
from tests.server import RunningServer


def _totals(server: RunningServer, name: str, version: str) -> ServingTotals | None:
    for totals in server.app.ledger.serving_totals():
        if (totals.model, totals.version) == (name, version):
            return totals
    return None


def _probe(server: RunningServer, name: str, **options: object) -> ServingProbe:
    dataplane = server.app.dataplane
    assert dataplane is not None
    return server.run(probe_serving(dataplane, name, **options))  # type: ignore[arg-type]


def test_probe_measures_each_batch_size_and_bills_from_the_ledger(
    server: RunningServer, client: ParadigmClient, iris_model: str
) -> None:
    version = client.get_model(iris_model).version
    before = _totals(server, iris_model, version)
    probe = _probe(server, iris_model, requests=20)
    after = _totals(server, iris_model, version)

    assert (probe.name, probe.version, probe.device) == (iris_model, version, "cpu")
    assert probe.synthetic
    assert [m.batch_size for m in probe.batches] == [1, 64]
    for measure in probe.batches:
        assert measure.requests == 20
        assert measure.predictions == 20 * measure.batch_size
        assert 0 < measure.p50_ms <= measure.p99_ms
        assert measure.device_seconds_per_1k > 0
        assert measure.joules_per_1k > 0
        assert measure.dollars_per_1k > 0
    # Every row the probe served went through the ledger (warm-up requests included).
    assert after is not None and after.charge is not None
    served = sum((WARMUP_REQUESTS + 20) * size for size in (1, 64))
    assert after.predictions - (before.predictions if before else 0) == served
    spent = after.charge.device_seconds - (
        before.charge.device_seconds if before and before.charge else 0.0
    )
    measured = sum(m.device_seconds_per_1k * m.predictions / 1000 for m in probe.batches)
    assert measured <= spent + 1e-9
    # One batch of 64 costs less per prediction than 64 batches of one.
    assert probe.at(64).device_seconds_per_1k < probe.at(1).device_seconds_per_1k
    assert probe.worst_p99_ms == max(probe.at(1).p99_ms, probe.at(64).p99_ms)
    assert probe.to_dict()["batches"][0]["batch_size"] == 1


def test_probe_with_given_rows(
    server: RunningServer, client: ParadigmClient, iris_model: str
) -> None:
    rows = {"input": np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])}
    probe = _probe(server, iris_model, rows=rows, requests=5, batch_sizes=[3])
    assert not probe.synthetic
    assert probe.at(3).predictions == 15


def test_probe_refuses_what_the_data_plane_refuses(server: RunningServer, iris_model: str) -> None:
    with pytest.raises(NotFound):
        _probe(server, "no-such-model", requests=1)
    with pytest.raises(InvalidArgument, match="shape"):
        _probe(server, iris_model, rows={"input": np.zeros((2, 3))}, requests=1)
    with pytest.raises(InvalidArgument, match="requests"):
        _probe(server, iris_model, requests=0)

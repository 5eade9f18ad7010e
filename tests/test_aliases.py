"""Aliases against a real server: set and resolved by ModelInfer, ModelMetadata and
ModelReady (our client and tritonclient), promotions refused by their gates with the
numbers and accepted with their evidence kept, deletes refused without force, the CLI, and
an alias change reaching a second replica of a shared registry without a restart."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from clients import cli
from clients.client import ParadigmClient, ParadigmClientError
from tests.postgres import PostgresCluster
from tests.server import RunningServer

ROWS = np.random.default_rng(1).uniform(0, 7, size=(9, 4)).astype(np.float32)
NAME = "iris-promoted"


def train(client: ParadigmClient, algorithm: str, seed: int = 0, **params: int) -> str:
    job = client.start_training(
        "iris", algorithm, model_name=NAME, seed=seed, hyperparameters=params or None
    )
    return client.wait_for_job(job.id).model_version


@pytest.fixture(scope="module")
def versions(client: ParadigmClient) -> dict[str, str]:
    """Versions of one name: a good model, and a poor one on the same split."""
    return {
        "good": train(client, "logistic_regression"),
        "poor": train(client, "decision_tree", max_depth=1),
    }


def refusal(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(ParadigmClientError) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION, caught.value
    return caught.value.details


def test_alias_resolves_wherever_a_version_does(
    client: ParadigmClient, versions: dict[str, str], tmp_path: Path
) -> None:
    good = versions["good"]
    change = client.set_alias(NAME, good, "stable", note="first")
    assert (change.alias, change.version, change.previous) == ("stable", good, "")
    assert json.loads(change.evidence_json) == {"gates": {}, "note": "first"}

    by_alias = client.infer(NAME, ROWS, version="stable")
    assert by_alias.model_version == good
    np.testing.assert_array_equal(
        by_alias.as_numpy("label"), client.infer(NAME, ROWS, version=good).as_numpy("label")
    )
    assert client.model_metadata(NAME, "stable").parameters["version"].string_param == good
    assert client.model_ready(NAME, "stable")
    assert client.get_model(NAME, "stable").version == good
    assert "stable" in client.get_model(NAME, good).aliases
    latest = client.get_model(NAME).version
    assert client.infer(NAME, ROWS, version="latest").model_version == latest
    assert client.infer(NAME, ROWS).model_version == latest

    with pytest.raises(ParadigmClientError) as caught:
        client.infer(NAME, ROWS, version="gold")
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert "no version or alias 'gold'" in caught.value.details
    assert not client.model_ready(NAME, "gold")
    with pytest.raises(ParadigmClientError) as caught:
        client.set_alias(NAME, good, "latest")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT

    # tritonclient, unchanged, with model_version="stable".
    np.save(tmp_path / "rows.npy", ROWS)
    completed = subprocess.run(
        [sys.executable, "-m", "tests.triton_probe", "--version", client.target, NAME,
         "stable", str(tmp_path / "rows.npy")],
        capture_output=True, text=True, timeout=120, check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    answer = json.loads(completed.stdout)
    assert answer["ready"] and answer["answered_by"] == good
    assert answer["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert answer["labels"] == by_alias.as_numpy("label").tolist()
    assert answer["unknown_alias_status"] == "StatusCode.NOT_FOUND"


def test_metric_gate_refuses_with_the_numbers_and_accepts_with_evidence(
    client: ParadigmClient, versions: dict[str, str]
) -> None:
    good, poor = versions["good"], versions["poor"]
    client.set_alias(NAME, good, "champion")
    models = {m.version: m for m in client.list_models(NAME)}
    held, offered = models[good].metrics["accuracy"], models[poor].metrics["accuracy"]
    assert offered < held - 0.05  # a one-split tree is well behind on iris

    details = refusal(client.set_alias, NAME, poor, "champion", metric_epsilon=0.01)
    assert "metric gate" in details
    assert f"accuracy {offered:.4f} of version {poor}" in details
    assert f"{held - offered:.4f} below holder version {good}'s {held:.4f}" in details
    assert client.get_model(NAME, "champion").version == good  # not moved

    # Within a generous epsilon it passes, and the evidence says on which rows.
    change = client.set_alias(NAME, poor, "champion", metric_epsilon=1.0, require_parity=True)
    assert (change.version, change.previous) == (poor, good)
    gates = json.loads(change.evidence_json)["gates"]
    assert gates["parity"]["passed"]
    metric = gates["metric"]
    assert metric["passed"] and metric["holder_version"] == good
    assert (metric["candidate"], metric["holder"]) == (offered, held)
    assert "the same held-out rows" in metric["rows"] and "split seed 0" in metric["rows"]
    client.set_alias(NAME, good, "champion", note="back")

    history = client.list_aliases(NAME, "champion").history
    assert [(e.version, e.previous) for e in history] == [(good, ""), (poor, good), (good, poor)]
    assert json.loads(history[1].evidence_json)["gates"]["metric"]["passed"]


def test_metric_gate_scores_differently_split_versions_on_their_shared_rows(
    client: ParadigmClient,
) -> None:
    """Split with other seeds, their recorded metrics are on different rows: both are
    scored afresh, in a worker, on the rows neither was trained on."""
    name = "bc-promoted"

    def bc(algorithm: str, seed: int, **params: int) -> str:
        job = client.start_training(
            "breast_cancer", algorithm, model_name=name, seed=seed, hyperparameters=params or None
        )
        return client.wait_for_job(job.id).model_version

    holder, challenger, stump = (
        bc("logistic_regression", 0),
        bc("logistic_regression", 1),
        bc("decision_tree", 2, max_depth=1),
    )
    client.set_alias(name, holder, "champion")

    details = refusal(client.set_alias, name, stump, "champion", metric_epsilon=0.0)
    assert "metric gate: accuracy" in details and f"below holder version {holder}'s" in details

    change = client.set_alias(name, challenger, "champion", metric_epsilon=0.1)
    metric = json.loads(change.evidence_json)["gates"]["metric"]
    assert metric["passed"] and metric["holder_version"] == holder
    assert "held out from training by both" in metric["rows"]
    assert "different split seed" in metric["rows"]
    # 569 rows, a quarter held out by each: about a sixteenth held out by both.
    assert 15 <= metric["shared_rows"] <= 70
    assert 0.8 < metric["candidate"] <= 1.0 and 0.8 < metric["holder"] <= 1.0
    assert metric["comparison_cost"]["device_seconds"] > 0
    client.delete_model(name, force=True)


def test_serving_gates_measure_by_serving(client: ParadigmClient, versions: dict[str, str]) -> None:
    good = versions["good"]
    details = refusal(
        client.set_alias, NAME, good, "fast", max_p99_ms=1e-6, max_joules_per_1k=1e-12,
        probe_requests=5,
    )  # fmt: skip
    assert "latency gate: p99" in details and "over the budget of 1e-06 ms" in details
    assert "energy gate:" in details and "J per 1 000 predictions" in details
    assert NAME not in [a.name for a in client.list_aliases(NAME, "fast").aliases]

    change = client.set_alias(
        NAME, good, "fast", max_p99_ms=60_000, max_joules_per_1k=1e6, probe_requests=5
    )
    evidence = json.loads(change.evidence_json)
    assert evidence["gates"]["latency"]["passed"] and evidence["gates"]["energy"]["passed"]
    probe = evidence["probe"]
    assert probe["version"] == good
    assert [b["batch_size"] for b in probe["batches"]] == [1, 64]
    assert all(b["p99_ms"] > 0 and b["joules_per_1k"] > 0 for b in probe["batches"])
    assert evidence["gates"]["latency"]["p99_ms"] == max(b["p99_ms"] for b in probe["batches"])


def test_parity_gate_refuses_an_onnx_import(
    client: ParadigmClient, versions: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "model.onnx"
    client.export_model(NAME, path, version=versions["good"])
    job = client.import_model("iris-imported", path, task="classification")
    version = client.wait_for_job(job.id).model_version
    details = refusal(client.set_alias, "iris-imported", version, "champion", require_parity=True)
    assert "parity gate" in details and "imported as ONNX" in details
    client.set_alias("iris-imported", version, "champion")  # no gate: allowed
    # Imports record no held-out rows: nothing to compare a metric on.
    job = client.import_model("iris-imported", path, task="classification")
    again = client.wait_for_job(job.id).model_version
    details = refusal(client.set_alias, "iris-imported", again, "champion", metric_epsilon=1.0)
    assert "metric gate: cannot compare accuracy" in details and "imported" in details
    client.delete_model("iris-imported", force=True)


def test_delete_of_an_aliased_version_needs_force(
    client: ParadigmClient, versions: dict[str, str]
) -> None:
    poor = versions["poor"]
    client.set_alias(NAME, poor, "doomed")
    details = refusal(client.delete_model, NAME, poor)
    assert f"alias 'doomed' -> version {poor}" in details and "force" in details
    assert client.delete_model(NAME, poor, force=True) == [poor]
    assert "doomed" not in {a.alias for a in client.list_aliases(NAME).aliases}
    last = client.list_aliases(NAME, "doomed").history[-1]
    assert (last.version, last.previous) == ("", poor)
    with pytest.raises(ParadigmClientError) as caught:
        client.infer(NAME, ROWS, version="doomed")
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


def test_cli_alias_commands(
    server: RunningServer,
    client: ParadigmClient,
    versions: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = versions["good"]
    base = ["--target", server.target]
    assert cli.main([*base, "models", "alias", NAME, good, "cli-champion",
                     "--gate-metric-epsilon", "0.01", "--require-parity",
                     "--note", "from the cli"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert f"cli-champion -> version {good}" in out and "parity: passed" in out
    assert cli.main([*base, "models", "alias", NAME, good, "cli-champion",
                     "--max-p99-ms", "0.000001", "--probe-requests", "3"]) != 0  # fmt: skip
    assert "latency gate" in capsys.readouterr().err
    assert cli.main([*base, "models", "aliases", NAME]) == 0
    out = capsys.readouterr().out
    assert "cli-champion" in out and "history (oldest first)" in out and "from the cli" in out
    assert cli.main([*base, "models", "show", NAME, "--version", "cli-champion"]) == 0
    assert "cli-champion" in capsys.readouterr().out
    assert cli.main([*base, "models"]) == 0
    listed = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert listed[0][-1] == "aliases"
    assert any(row[:2] == [NAME, good] and "cli-champion" in row[-1] for row in listed)
    assert cli.main([*base, "models", "delete", NAME, "--version", good]) != 0
    assert "force" in capsys.readouterr().err
    assert cli.main([*base, "models", "unalias", NAME, "cli-champion"]) == 0
    assert "removed" in capsys.readouterr().out


# ----------------------------------------------------------- a shared registry, two replicas


@pytest.fixture
def replicas(
    tmp_path: Path, postgres: PostgresCluster
) -> Iterator[tuple[RunningServer, RunningServer]]:
    url = postgres.create_database("alias-replicas")
    shared = {
        "registry_url": url,
        "artifacts_url": str(tmp_path / "shared-models"),
        "registry_poll_seconds": 0.2,
    }
    first = RunningServer(tmp_path / "a", **shared)
    try:
        second = RunningServer(tmp_path / "b", **shared)
    except BaseException:
        first.stop()
        raise
    yield first, second
    second.stop()
    first.stop()


def test_alias_change_reaches_another_replica_without_restart(
    replicas: tuple[RunningServer, RunningServer],
) -> None:
    first, second = replicas
    with (
        ParadigmClient(first.target, timeout=120) as a,
        ParadigmClient(second.target, timeout=120) as b,
    ):
        for seed in (0, 1):
            job = a.start_training("iris", "logistic_regression", model_name="shared", seed=seed)
            a.wait_for_job(job.id)
        a.set_alias("shared", "1", "champion")
        assert wait_for(lambda: _served_version(b, "champion") == "1")
        a.set_alias("shared", "2", "champion")
        assert wait_for(lambda: _served_version(b, "champion") == "2")
        # The second replica's alias gauge moved with it.
        shown = second.metrics_registry.get_sample_value
        labels = {"model": "shared", "alias": "champion"}
        assert shown("paradigm_model_alias_info", {**labels, "version": "2"}) == 1
        assert shown("paradigm_model_alias_info", {**labels, "version": "1"}) is None
        assert b.model_ready("shared", "champion")
        # Set on the second, refused on the first: the store is one.
        b.set_alias("shared", "1", "canary")
        assert wait_for(lambda: _served_version(a, "canary") == "1")
        with pytest.raises(ParadigmClientError) as caught:
            a.delete_model("shared", "1")
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
        b.delete_alias("shared", "canary")
        assert wait_for(lambda: _served_version(a, "canary") is None)


def _served_version(client: ParadigmClient, version: str) -> str | None:
    try:
        return client.infer("shared", ROWS, version=version).model_version
    except ParadigmClientError as error:
        if error.code == grpc.StatusCode.NOT_FOUND:
            return None
        raise


def wait_for(condition: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_a_restarted_server_loads_aliased_versions_before_traffic(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = RunningServer(data)
    try:
        with ParadigmClient(server.target, timeout=120) as client:
            for seed in (0, 1):
                job = client.start_training(
                    "iris", "logistic_regression", model_name="m", seed=seed
                )
                client.wait_for_job(job.id)
            client.set_alias("m", "1", "champion")
    finally:
        server.stop()
    restarted = RunningServer(data)
    try:
        sample = restarted.metrics_registry.get_sample_value
        version_1 = {
            "paradigm": "classical",
            "model": "m",
            "version": "1",
            "algorithm": "logistic_regression",
            "device": "cpu",
        }
        # Version 1 is not the latest: only its alias makes it worth loading at start.
        assert wait_for(
            lambda: sample("paradigm_model_load_duration_seconds_count", version_1) == 1
        )
        alias = {"model": "m", "alias": "champion", "version": "1"}
        assert sample("paradigm_model_alias_info", alias) == 1
    finally:
        restarted.stop()

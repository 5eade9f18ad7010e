"""Searches against a real server: trials are training jobs, budgets stop them, cancel and
pruning stop their jobs, the leaderboard carries every figure, bad requests get a status."""

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

from clients.client import ParadigmClient, ParadigmClientError
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from service.gen.paradigm.v1 import search_pb2 as search_pb
from tests.postgres import PostgresCluster
from tests.server import RunningServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def search_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = RunningServer(tmp_path_factory.mktemp("search-data"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(search_server: RunningServer) -> Iterator[ParadigmClient]:
    with ParadigmClient(search_server.target, timeout=180) as client:
        client.wait_until_ready(30)
        yield client


@pytest.fixture(scope="module")
def finished(client: ParadigmClient) -> search_pb.Search:
    """Three trials of two classical algorithms on iris, run to the end."""
    search = client.start_search(
        "iris", algorithms=["logistic_regression", "decision_tree"], trials=3, seed=3
    )
    return client.wait_for_search(search.id)


def _wait_until(condition, what: str, timeout: float = 120.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_each_trial_is_a_training_job(client: ParadigmClient, finished: search_pb.Search) -> None:
    assert finished.state == search_pb.SEARCH_STATE_SUCCEEDED, finished.stop_reason
    assert finished.stop_reason == "trial budget spent"
    assert finished.trials_started == len(finished.trials) == 3
    assert finished.metric == "accuracy" and finished.maximize
    assert finished.study_storage.startswith("sqlite:///") and finished.study_name
    for trial in finished.trials:
        assert trial.state == search_pb.TRIAL_STATE_SUCCEEDED, trial.error
        assert trial.algorithm in ("logistic_regression", "decision_tree")
        job = client.get_job(trial.job_id)
        assert job.state == pb.JOB_STATE_SUCCEEDED
        assert job.dataset == "iris" and job.algorithm == trial.algorithm
        assert (job.model_name, job.model_version) == (trial.model_name, trial.model_version)
        assert trial.value == pytest.approx(job.metrics["accuracy"])
        assert trial.training_dollars > 0 and trial.training_joules > 0
        assert set(trial.hyperparameters) <= {"C", "max_depth", "min_samples_leaf"}
    best = max(finished.trials, key=lambda t: t.value)
    assert finished.best_value == pytest.approx(best.value)
    assert finished.dollars_spent == pytest.approx(sum(t.training_dollars for t in finished.trials))
    # GetSearch after the end says the same.
    assert client.get_search(finished.id).trials == finished.trials


def test_leaderboard_has_every_figure(client: ParadigmClient, finished: search_pb.Search) -> None:
    board = client.leaderboard(finished.id)
    assert board.final and board.metric == "accuracy" and board.maximize
    algorithms = {t.algorithm for t in finished.trials}
    assert {e.algorithm for e in board.entries} == algorithms
    assert [e.rank for e in board.entries] == list(range(1, len(algorithms) + 1))
    values = [e.value for e in board.entries]
    assert values == sorted(values, reverse=True)
    for entry in board.entries:
        assert entry.paradigm == pb.PARADIGM_CLASSICAL
        assert entry.ci_low <= entry.value <= entry.ci_high and entry.ci_low < entry.ci_high
        assert entry.fit_seconds > 0 and entry.model_bytes > 0
        assert entry.training_device_seconds > 0
        assert entry.training_joules > 0 and entry.training_dollars > 0
        assert not entry.serving_error
        assert [s.batch_size for s in entry.serving] == [1, 64]
        for figures in entry.serving:
            assert 0 < figures.p50_ms <= figures.p99_ms
            assert figures.dollars_per_1000 > 0 and figures.joules_per_1000 > 0
            assert figures.requests > 0
        assert client.get_model(entry.model_name, entry.model_version).algorithm == entry.algorithm
    assert any(entry.pareto for entry in board.entries)
    assert board.entries[0].pareto  # nothing beats the best metric on the metric


def test_search_metrics_are_exported(
    search_server: RunningServer, finished: search_pb.Search
) -> None:
    registry = search_server.metrics_registry
    labels = {"search": finished.id, "dataset": "iris"}
    trials = registry.get_sample_value(
        "paradigm_search_trials_total", {**labels, "state": "succeeded"}
    )
    assert trials == 3
    assert registry.get_sample_value("paradigm_search_spent", {**labels, "resource": "trials"}) == 3
    assert registry.get_sample_value(
        "paradigm_search_best_value", {**labels, "metric": "accuracy"}
    ) == pytest.approx(finished.best_value)


def test_time_budget_stops_the_search_and_its_running_trial(client: ParadigmClient) -> None:
    # An mlp trial on digits takes longer than a one-second budget.
    search = client.start_search("digits", algorithms=["mlp"], seconds=1.0, pruner="none")
    ended = client.wait_for_search(search.id)
    assert ended.stop_reason.startswith("time budget spent")
    assert ended.trials, "a trial was started"
    trial = ended.trials[-1]  # the one running when the second was up
    assert trial.state == search_pb.TRIAL_STATE_CANCELLED
    assert client.get_job(trial.job_id).state == pb.JOB_STATE_CANCELLED


def test_cancel_cancels_the_running_trials(client: ParadigmClient) -> None:
    search = client.start_search("digits", algorithms=["mlp"], trials=20, pruner="none")
    running = _wait_until(
        lambda: [
            t
            for t in client.get_search(search.id).trials
            if t.job_id and client.get_job(t.job_id).state == pb.JOB_STATE_RUNNING
        ],
        "a running trial",
    )
    assert not client.leaderboard(search.id).final  # running: no serving figures yet
    cancelled = client.cancel_search(search.id)
    assert cancelled.state == search_pb.SEARCH_STATE_CANCELLED
    assert cancelled.stop_reason == "cancelled"
    assert len(cancelled.trials) < 20
    for trial in running:
        assert client.get_job(trial.job_id).state == pb.JOB_STATE_CANCELLED
    assert all(t.state != search_pb.TRIAL_STATE_RUNNING for t in cancelled.trials)
    with pytest.raises(ParadigmClientError) as error:
        client.cancel_search(search.id)
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_pruner_stops_a_deep_trial_from_its_epoch_scores(client: ParadigmClient) -> None:
    # Validation accuracy never reaches 1.01: the threshold pruner stops the first epoch.
    # A CNN on digits: its epochs take long enough for the cancel to land before the last
    # one (an iris MLP from the warm fork server trains all its epochs in ~30 ms).
    search = client.start_search(
        "digits", algorithms=["cnn"], trials=1, pruner="threshold", prune_threshold=1.01
    )
    ended = client.wait_for_search(search.id)
    (trial,) = ended.trials
    assert trial.state == search_pb.TRIAL_STATE_PRUNED, trial.error
    assert trial.epochs_reported >= 1
    assert trial.error.startswith(f"pruned at epoch {trial.epochs_reported}: val_accuracy")
    assert client.get_job(trial.job_id).state == pb.JOB_STATE_CANCELLED
    assert ended.state == search_pb.SEARCH_STATE_FAILED  # nothing succeeded
    assert client.leaderboard(ended.id).entries == []


def test_default_algorithms_fit_a_mixed_table(client: ParadigmClient) -> None:
    search = client.start_search("penguins", trials=2, seed=1, parallelism=1)
    algorithms = set(search.algorithms)
    assert {"logistic_regression", "random_forest", "mlp"} <= algorithms
    # Regression-only, image-only and anomaly algorithms do not fit penguins' species.
    assert not algorithms & {"linear_regression", "ridge", "cnn", "autoencoder"}
    ended = client.wait_for_search(search.id)
    assert ended.trials_started == 2
    assert all(t.state != search_pb.TRIAL_STATE_RUNNING for t in ended.trials)


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        ({"dataset": "no-such-data", "trials": 1}, grpc.StatusCode.NOT_FOUND, "no-such-data"),
        (
            {"dataset": "iris", "algorithms": ["quantum_forest"], "trials": 1},
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown algorithm",
        ),
        ({"dataset": "iris"}, grpc.StatusCode.INVALID_ARGUMENT, "needs a budget"),
        (
            {"dataset": "iris", "trials": 1, "metric": "rmse"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "cannot be optimised",
        ),
        (
            {"dataset": "iris", "trials": 1, "algorithms": ["linear_regression"]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "linear_regression cannot do classification",
        ),
        ({"dataset": "iris", "seconds": -1}, grpc.StatusCode.INVALID_ARGUMENT, "budget.seconds"),
        (
            {"dataset": "iris", "trials": 1, "parallelism": 100_000},
            grpc.StatusCode.INVALID_ARGUMENT,
            "parallelism must be between 0 and",
        ),
        (
            {"dataset": "iris", "trials": 1, "pruner": "hyperband"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown pruner",
        ),
    ],
)
def test_bad_requests(
    client: ParadigmClient, arguments: dict, code: grpc.StatusCode, message: str
) -> None:
    with pytest.raises(ParadigmClientError) as error:
        client.start_search(**arguments)
    assert error.value.code == code
    assert message in error.value.details


def test_unknown_search_is_not_found(client: ParadigmClient) -> None:
    for call in (client.get_search, client.leaderboard, client.cancel_search):
        with pytest.raises(ParadigmClientError) as error:
            call("0123456789ab")
        assert error.value.code == grpc.StatusCode.NOT_FOUND


def test_a_search_outlives_its_server(tmp_path: Path) -> None:
    first = RunningServer(tmp_path)
    try:
        with ParadigmClient(first.target, timeout=120) as client:
            search = client.start_search("iris", algorithms=["knn"], trials=1)
            ended = client.wait_for_search(search.id)
            board = client.leaderboard(search.id)
    finally:
        first.stop()
    second = RunningServer(tmp_path)
    try:
        with ParadigmClient(second.target, timeout=120) as client:
            assert client.get_search(search.id) == ended
            assert client.leaderboard(search.id) == board
    finally:
        second.stop()


def test_the_study_lives_in_the_shared_registry(postgres: PostgresCluster, tmp_path: Path) -> None:
    url = postgres.create_database("search")
    server = RunningServer(tmp_path / "a", registry_url=url, artifacts_url=str(tmp_path / "m"))
    try:
        with ParadigmClient(server.target, timeout=120) as client:
            search = client.start_search("iris", algorithms=["naive_bayes"], trials=1)
            ended = client.wait_for_search(search.id)
            assert ended.state == search_pb.SEARCH_STATE_SUCCEEDED, ended.stop_reason
            assert ended.study_storage.startswith("postgresql+psycopg://")
    finally:
        server.stop()
    # Another replica on the same database reads the search from there.
    replica = RunningServer(tmp_path / "b", registry_url=url, artifacts_url=str(tmp_path / "m"))
    try:
        with ParadigmClient(replica.target, timeout=120) as client:
            assert client.get_search(search.id).trials == ended.trials
    finally:
        replica.stop()


def test_sampling_imports_no_training_library(tmp_path: Path) -> None:
    """Optuna runs in the serving process: past TPE's random start-up trials, sampling the
    whole catalog's spaces and pruning imports none of what the serving side must not."""
    code = f"""
import sys
from service.training import catalog, search_study
db = search_study.StudyDatabase("sqlite:///{tmp_path / "study.sqlite3"}")
study = db.study(
    "x", maximize=True, seed=0, pruner="median", threshold=0.0,
    algorithms=list(catalog.ALGORITHMS),
)
for number in range(14):
    sampled = study.ask()
    study.report(sampled.trial, number / 14, 1)
    study.report(sampled.trial, number / 14, 2)
    study.tell(sampled.trial, "complete", number / 14)
heavy = ("torch", "sklearn", "scipy", "pandas", "pyarrow", "onnx", "skl2onnx", "PIL")
print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
    # And the serving process imports neither Optuna nor SQLAlchemy until a search needs
    # them (its study database opens in the background after start).
    code = "import sys, service.app; print(sorted({'optuna', 'sqlalchemy'} & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_search_and_leaderboard_through_the_cli(
    search_server: RunningServer, tmp_path: Path
) -> None:
    cli = [str(Path(sys.executable).parent / "paradigm"), "--target", search_server.target]

    def paradigm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args], capture_output=True, text=True, timeout=300, check=False
        )

    searched = paradigm(
        "search", "iris", "--algorithms", "logistic_regression,mlp", "--trials", "3",
        "--seed", "2",
    )  # fmt: skip
    assert searched.returncode == 0, searched.stderr
    search_id = searched.stdout.split()[1]
    assert searched.stdout.count("  trial ") == 3
    assert f"search {search_id} succeeded: trial budget spent; 3 trials" in searched.stdout
    board_json, plot = tmp_path / "board.json", tmp_path / "pareto.png"
    board = paradigm("leaderboard", search_id, "--json", str(board_json), "--plot", str(plot))
    assert board.returncode == 0, board.stderr
    assert "p99 b64 ms" in board.stdout and "$/1k b1" in board.stdout
    data = json.loads(board_json.read_text())
    assert data["final"] and data["entries"][0]["rank"] == 1
    assert {e["paradigm"] for e in data["entries"]} <= {"classical", "deep"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = paradigm("search", "no-such-data", "--trials", "1")
    assert missing.returncode == 1 and missing.stderr.startswith("error: NOT_FOUND:")


@pytest.mark.parametrize("resource", ["dollars", "joules"])
def test_a_cost_budget_stops_the_search_at_the_ledgers_figures(
    client: ParadigmClient, resource: str
) -> None:
    # Any finished trial costs more than this: the search stops after its first one.
    dollars, joules = (1e-12, 0.0) if resource == "dollars" else (0.0, 1e-12)
    search = client.start_search(
        "iris", algorithms=["knn"], parallelism=1, trials=10, dollars=dollars, joules=joules
    )
    ended = client.wait_for_search(search.id)
    word = {"dollars": "dollar", "joules": "energy"}[resource]
    assert ended.stop_reason == f"{word} budget spent"
    assert ended.trials_started == 1
    (trial,) = ended.trials
    spent = ended.dollars_spent if resource == "dollars" else ended.joules_spent
    assert spent == pytest.approx(
        trial.training_dollars if resource == "dollars" else trial.training_joules
    )
    assert spent > 0


def test_a_regression_search_optimises_r2_or_rmse(client: ParadigmClient) -> None:
    search = client.start_search("diabetes", algorithms=["ridge"], trials=2, metric="rmse")
    assert search.metric == "rmse" and not search.maximize
    ended = client.wait_for_search(search.id)
    assert ended.best_value == pytest.approx(min(t.value for t in ended.trials))
    (entry,) = client.leaderboard(search.id).entries
    assert entry.ci_low < entry.value < entry.ci_high


def test_a_server_that_stops_ends_its_running_search_as_interrupted(tmp_path: Path) -> None:
    first = RunningServer(tmp_path)
    try:
        with ParadigmClient(first.target, timeout=120) as client:
            search = client.start_search("digits", algorithms=["mlp"], trials=20)
            _wait_until(lambda: client.get_search(search.id).trials, "a trial")
    finally:
        first.stop()
    second = RunningServer(tmp_path)
    try:
        with ParadigmClient(second.target, timeout=120) as client:
            ended = client.get_search(search.id)
            assert ended.state == search_pb.SEARCH_STATE_FAILED
            assert ended.stop_reason.startswith("interrupted")
            assert all(t.state != search_pb.TRIAL_STATE_RUNNING for t in ended.trials)
            with pytest.raises(ParadigmClientError) as error:
                client.cancel_search(search.id)
            assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        second.stop()


def test_replicas_opening_a_new_study_database_together_both_succeed(
    postgres: PostgresCluster,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from service.training import search_storage, search_study

    for _ in range(3):  # the race is in making Optuna's tables: try it a few times
        url = search_storage.storage_url(postgres.create_database("race"), Path("."))
        with ThreadPoolExecutor(4) as pool:
            databases = list(pool.map(search_study.StudyDatabase, [url] * 4))
        for database in databases:
            assert database.records() == []
            database.close()


def test_a_search_promotes_its_winner_through_the_gates(client: ParadigmClient) -> None:
    """promote_alias: the best trial goes to the alias once the search ends, through the
    gates SetAlias uses; a gate it cannot pass leaves the alias alone and says why."""
    passed = client.start_search(
        "iris", algorithms=["logistic_regression"], trials=2, seed=3,
        promote_alias="searched", promote_gates=pb.PromotionGates(require_parity=True),
    )  # fmt: skip
    ended = client.wait_for_search(passed.id)
    client.leaderboard(passed.id)  # final: the winner served and the promotion decided
    best = next(t for t in client.get_search(passed.id).trials if t.number == ended.best_trial)
    assert client.get_search(passed.id).promotion == (
        f"{best.model_name}:{best.model_version} -> searched"
    )
    answer = client.infer(best.model_name, np.zeros((1, 4), np.float32), version="searched")
    assert answer.model_version == best.model_version
    [alias] = [a for a in client.list_aliases(best.model_name).aliases if a.alias == "searched"]
    assert alias.version == best.model_version

    refused = client.start_search(
        "iris", algorithms=["logistic_regression"], trials=1, seed=4,
        promote_alias="fast", promote_gates=pb.PromotionGates(max_p99_ms=1e-6),
    )  # fmt: skip
    client.wait_for_search(refused.id)
    client.leaderboard(refused.id)
    outcome = client.get_search(refused.id).promotion
    assert outcome.startswith("refused:") and "p99" in outcome
    with pytest.raises(ParadigmClientError, match="INVALID_ARGUMENT"):
        client.start_search("iris", trials=1, promote_alias="1st")  # not an alias name

"""Cascades against a real server: calibration, serving by name, versions, metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from sklearn.datasets import load_digits

from clients.client import ParadigmClient, ParadigmClientError
from clients.harness import paradigm_server
from tests.server import RunningServer
from tests.test_cli import paradigm
from tests.test_server_process import scrape
from tests.test_workers import fresh


def _train(
    client: ParadigmClient, dataset: str, algorithm: str, name: str, **options: object
) -> str:
    job = client.start_training(dataset, algorithm, model_name=name, seed=0, **options)  # type: ignore[arg-type]
    client.wait_for_job(job.id)
    return name


@pytest.fixture(scope="module")
def digits_pair(client: ParadigmClient) -> tuple[str, str]:
    """A cheap, less accurate first model and a better, clearly costlier second one, on one
    split (a logistic regression second costs about what naive Bayes does, so which of the
    two is cheaper was down to the machine's noise)."""
    return (
        _train(client, "digits", "naive_bayes", "cascade-digits-nb"),
        _train(
            client, "digits", "random_forest", "cascade-digits-rf",
            hyperparameters={"n_estimators": 60},
        ),
    )  # fmt: skip


@pytest.fixture(scope="module")
def digits_rows() -> np.ndarray:
    return load_digits().data.astype(np.float32)[:300]


def test_target_reached_on_calibration(
    client: ParadigmClient, digits_pair: tuple[str, str]
) -> None:
    first, then = digits_pair
    cascade = client.create_cascade("digits-target", first, then, target_accuracy=0.9)
    assert cascade.version == "1" and cascade.target_met
    assert cascade.chosen.accuracy >= 0.9
    # The cheapest point of the curve reaching the target.
    reaching = [p for p in cascade.curve if p.accuracy >= 0.9]
    assert cascade.chosen.dollars_per_1k == min(p.dollars_per_1k for p in reaching)
    # B alone costs B only; escalating every row costs A and B.
    assert cascade.then_alone.dollars_per_1k == cascade.then_cost.dollars_per_1k
    assert cascade.curve[-1].dollars_per_1k > cascade.then_alone.dollars_per_1k
    assert cascade.chosen in cascade.curve and len(cascade.curve) >= 3
    assert cascade.then_alone.escalated == 1.0 and cascade.first_alone.escalated == 0.0
    assert cascade.first_cost.dollars_per_1k > 0 and cascade.then_cost.dollars_per_1k > 0
    assert cascade.dataset == "digits" and cascade.calibration_rows > 100
    assert set(cascade.evaluation) >= {"accuracy", "escalated", "then_accuracy"}


def test_rows_in_order_with_mixed_answers_in_one_batch(
    server: RunningServer,
    client: ParadigmClient,
    digits_pair: tuple[str, str],
    digits_rows: np.ndarray,
) -> None:
    first, then = digits_pair
    made = client.create_cascade("digits-mixed", first, then, target_accuracy=0.9)
    # At most half the cost of sending every row on: some rows stay with A, and (B being
    # the more accurate) the most accurate point within the cap escalates some.
    cap = made.first_cost.dollars_per_1k + 0.5 * made.then_cost.dollars_per_1k
    cascade = client.recalibrate_cascade("digits-mixed", max_dollars_per_1k=cap)
    assert cascade.version == "2" and 0 < cascade.chosen.escalated <= 0.5

    result = client.infer("digits-mixed", digits_rows)
    assert result.model_name == "digits-mixed" and result.model_version == "2"
    answered = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("answered_by")]
    first_stage, then_stage = f"{first}:{cascade.first_version}", f"{then}:{cascade.then_version}"
    assert set(answered) == {first_stage, then_stage}  # mixed in one request
    a = client.infer(first, digits_rows)
    b = client.infer(then, digits_rows)
    by_then = np.array([stage == then_stage for stage in answered])
    top = a.as_numpy("probabilities").max(axis=1)
    np.testing.assert_array_equal(by_then, top < cascade.threshold)
    # Every row holds the answer of the model that answered it, in the request's order.
    for output in ("label", "probabilities"):
        expected = np.where(
            by_then.reshape(-1, *[1] * (a.as_numpy(output).ndim - 1)),
            b.as_numpy(output),
            a.as_numpy(output),
        )
        np.testing.assert_allclose(result.as_numpy(output), expected, rtol=1e-6)
    assert result.parameters["cascade_escalated"] == str(int(by_then.sum()))

    # Asking for one output gives that one only.
    only = client.infer("digits-mixed", digits_rows[:5], outputs=["answered_by"])
    assert list(only.outputs) == ["answered_by"]

    labels = {"cascade": "digits-mixed", "version": "2", "first": first_stage, "then": then_stage}
    registry = server.metrics_registry
    rows_then = registry.get_sample_value(
        "paradigm_cascade_rows_total", {**labels, "stage": "then"}
    )
    rows_first = registry.get_sample_value(
        "paradigm_cascade_rows_total", {**labels, "stage": "first"}
    )
    assert rows_then is not None and rows_first is not None
    assert rows_first + rows_then == len(digits_rows) + 5
    assert rows_then >= by_then.sum()
    spent = registry.get_sample_value("paradigm_cascade_cost_total", {**labels, "unit": "dollars"})
    alone = registry.get_sample_value(
        "paradigm_cascade_then_alone_cost_total", {**labels, "unit": "dollars"}
    )
    assert spent is not None and spent > 0 and alone is not None and alone > 0
    assert registry.get_sample_value("paradigm_cascade_threshold", labels) == pytest.approx(
        cascade.threshold
    )


def test_versions_listed_shown_and_deleted(
    client: ParadigmClient, digits_pair: tuple[str, str], digits_rows: np.ndarray
) -> None:
    first, then = digits_pair
    client.create_cascade("digits-versions", first, then, accuracy_within_then=0.01)
    again = client.recalibrate_cascade("digits-versions")
    assert again.version == "2" and again.target_accuracy > 0  # the goal kept
    listed = [c for c in client.list_cascades("digits-versions")]
    assert [c.version for c in listed] == ["1", "2"] and not listed[0].curve
    assert client.get_cascade("digits-versions", "1").curve
    assert client.model_ready("digits-versions") and client.model_ready("digits-versions", "1")
    metadata = client.model_metadata("digits-versions")
    assert [o.name for o in metadata.outputs][-1] == "answered_by"
    assert metadata.parameters["paradigm"].string_param == "cascade"
    old = client.infer("digits-versions", digits_rows[:3], version="1")
    assert old.model_version == "1"
    # "latest" and zero-padded numbers mean what they mean for a model.
    assert client.infer("digits-versions", digits_rows[:3], version="latest").model_version == "2"
    assert client.infer("digits-versions", digits_rows[:3], version="01").model_version == "1"
    # Aliased like a model: SetAlias on the cascade's name points at one of its versions.
    change = client.set_alias("digits-versions", "1", "stable")
    assert (change.version, change.previous) == ("1", "")
    assert client.infer("digits-versions", digits_rows[:3], version="stable").model_version == "1"
    assert client.model_ready("digits-versions", "stable")
    moved = client.set_alias("digits-versions", "latest", "stable")
    assert (moved.version, moved.previous) == ("2", "1")
    assert client.infer("digits-versions", digits_rows[:3], version="stable").model_version == "2"
    listed_aliases = client.list_aliases("digits-versions")
    assert [(a.alias, a.version) for a in listed_aliases.aliases] == [("stable", "2")]
    with pytest.raises(ParadigmClientError) as gated:
        client.set_alias("digits-versions", "1", "gated", require_parity=True)
    assert gated.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ParadigmClientError) as missing:
        client.set_alias("digits-versions", "9", "stable")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert client.delete_alias("digits-versions", "stable").previous == "2"
    with pytest.raises(ParadigmClientError) as unaliased:
        client.infer("digits-versions", digits_rows[:3], version="stable")
    assert unaliased.value.code == grpc.StatusCode.NOT_FOUND
    assert client.delete_cascade("digits-versions", "1") == ["1"]
    assert client.delete_cascade("digits-versions") == ["2"]
    assert not client.model_ready("digits-versions")
    with pytest.raises(ParadigmClientError) as error:
        client.infer("digits-versions", digits_rows[:3])
    assert error.value.code == grpc.StatusCode.NOT_FOUND


def test_mismatched_models_refused(
    client: ParadigmClient, digits_pair: tuple[str, str], iris_model: str
) -> None:
    first, _ = digits_pair
    with pytest.raises(ParadigmClientError) as error:
        client.create_cascade("bad-pair", iris_model, first, target_accuracy=0.9)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "different inputs" in error.value.details
    other_split = _train(
        client, "digits", "logistic_regression", "cascade-digits-lr-split", test_fraction=0.3
    )
    with pytest.raises(ParadigmClientError) as error:
        client.create_cascade("bad-split", first, other_split, target_accuracy=0.9)
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "split differently" in error.value.details


def test_unknown_and_bad_requests(client: ParadigmClient, digits_pair: tuple[str, str]) -> None:
    first, then = digits_pair
    cases = [
        (("c", "no-such-model", then), {"target_accuracy": 0.9}, grpc.StatusCode.NOT_FOUND),
        (("c", first, f"{then}:99"), {"target_accuracy": 0.9}, grpc.StatusCode.NOT_FOUND),
        (("c", first, then), {"target_accuracy": 1.5}, grpc.StatusCode.INVALID_ARGUMENT),
        (("bad name!", first, then), {"target_accuracy": 0.9}, grpc.StatusCode.INVALID_ARGUMENT),
        ((first, first, then), {"target_accuracy": 0.9}, grpc.StatusCode.ALREADY_EXISTS),
    ]
    for args, goal, code in cases:
        with pytest.raises(ParadigmClientError) as error:
            client.create_cascade(*args, **goal)  # type: ignore[arg-type]
        assert error.value.code == code, (args, goal, error.value.details)
    for call in (
        lambda: client.get_cascade("no-such-cascade"),
        lambda: client.recalibrate_cascade("no-such-cascade"),
        lambda: client.delete_cascade("no-such-cascade"),
    ):
        with pytest.raises(ParadigmClientError) as error:
            call()
        assert error.value.code == grpc.StatusCode.NOT_FOUND


def test_served_through_tritonclient(
    server: RunningServer,
    client: ParadigmClient,
    digits_pair: tuple[str, str],
    digits_rows: np.ndarray,
    tmp_path: Path,
) -> None:
    first, then = digits_pair
    cascade = client.create_cascade("digits-triton", first, then, target_accuracy=0.9)
    np.save(tmp_path / "rows.npy", digits_rows[:40])
    completed = subprocess.run(
        [sys.executable, "-m", "tests.triton_probe", "--cascade", server.target,
         "digits-triton", str(tmp_path / "rows.npy")],
        capture_output=True, text=True, timeout=120, check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    answer = json.loads(completed.stdout)
    assert answer["model_ready"] and answer["outputs"][-1] == "answered_by"
    ours = client.infer("digits-triton", digits_rows[:40])
    assert answer["labels"] == ours.as_numpy("label").tolist()
    stages = {f"{first}:{cascade.first_version}", f"{then}:{cascade.then_version}"}
    assert set(answer["answered_by"]) <= stages and len(answer["answered_by"]) == 40


def test_table_cascade(client: ParadigmClient) -> None:
    """A mixed table (text categories as BYTES): the rows are split column by column."""
    first = _train(client, "penguins", "logistic_regression", "cascade-penguins-lr")
    then = _train(client, "penguins", "random_forest", "cascade-penguins-rf")
    cascade = client.create_cascade("penguins-cascade", first, then, accuracy_within_then=0.0)
    assert cascade.dataset == "penguins" and cascade.calibration_rows > 20
    rows = {
        "island": ["Biscoe", "Dream", "Torgersen"],
        "bill_length_mm": [45.0, 48.0, 39.0],
        "bill_depth_mm": [15.0, 18.0, 18.5],
        "flipper_length_mm": [215.0, 195.0, 190.0],
        "body_mass_g": [5000.0, 3700.0, 3600.0],
        "sex": ["male", "female", None],
        "year": [2008.0, 2009.0, 2007.0],
    }
    prediction = client.predict("penguins-cascade", rows)
    assert len(prediction.outputs["label"]) == 3
    assert len(prediction.outputs["answered_by"]) == 3


def test_every_worker_serves_cascades(tmp_path: Path, digits_rows: np.ndarray) -> None:
    """`--workers 2`: created through whichever worker, served by every one of them."""
    with paradigm_server(tmp_path, "workers", tmp_path / "data", args=["--workers", "2"]) as server:
        with fresh(server.target) as client:
            first = _train(client, "digits", "naive_bayes", "nb")
            then = _train(client, "digits", "logistic_regression", "lr")
        with fresh(server.target) as client:
            made = client.create_cascade("digits-workers", first, then, target_accuracy=0.9)
        sent = 0
        for _ in range(12):
            with fresh(server.target) as client:
                answer = client.infer("digits-workers", digits_rows[:20])
                assert answer.model_version == made.version
                assert len(answer.as_numpy("answered_by")) == 20
                sent += 20
        with fresh(server.target) as client:
            again = client.recalibrate_cascade("digits-workers")
        for _ in range(6):
            with fresh(server.target) as client:
                assert client.infer("digits-workers", digits_rows[:20]).model_version == "2"
                sent += 20
        assert server.metrics_url is not None
        with urllib.request.urlopen(server.metrics_url) as response:
            samples = scrape(response.read().decode())
        counted = sum(value for _, value in samples["paradigm_cascade_rows_total"])
        assert counted == sent and again.version == "2"


def test_cascade_through_the_cli(
    server: RunningServer, digits_pair: tuple[str, str], tmp_path: Path
) -> None:
    first, then = digits_pair
    made = paradigm(
        server, "cascade", "create", "cli-cascade", "--first", first, "--then", then,
        "--target-accuracy", "0.9", "--curve", str(tmp_path / "curve.csv"),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "cli-cascade version 1" in made.stdout and "first alone" in made.stdout
    assert (tmp_path / "curve.csv").read_text().startswith("threshold,escalated,accuracy")
    again = paradigm(server, "cascade", "recalibrate", "cli-cascade", "--within", "0.01")
    assert again.returncode == 0 and "version 2" in again.stdout, again.stderr
    listed = paradigm(server, "cascade", "list")
    assert listed.returncode == 0 and "cli-cascade" in listed.stdout
    shown = paradigm(server, "cascade", "show", "cli-cascade", "--version", "1")
    assert shown.returncode == 0 and "version 1" in shown.stdout
    refused = paradigm(server, "cascade", "create", "x", "--first", first, "--then", "nothing")
    assert refused.returncode != 0  # no goal: argparse refuses
    missing = paradigm(
        server, "cascade", "create", "x", "--first", first, "--then", "nothing",
        "--target-accuracy", "0.9",
    )  # fmt: skip
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    np.save(tmp_path / "rows.npy", load_digits().data[:4])
    predicted = paradigm(
        server, "predict", "cli-cascade", str(tmp_path / "rows.npy"), "--output", "answered_by"
    )
    assert predicted.returncode == 0, predicted.stderr
    answered = predicted.stdout.splitlines()[1:]
    assert len(answered) == 4 and all(line in (f"{first}:1", f"{then}:1") for line in answered)
    deleted = paradigm(server, "cascade", "delete", "cli-cascade")
    assert deleted.returncode == 0 and "1, 2" in deleted.stdout


def test_image_cascade(client: ParadigmClient) -> None:
    """An image dataset: the calibration rows are the held-out raw pixels."""
    first = _train(client, "digits_images", "naive_bayes", "cascade-images-nb")
    then = _train(client, "digits_images", "logistic_regression", "cascade-images-lr")
    cascade = client.create_cascade("images-cascade", first, then, target_accuracy=0.8)
    assert cascade.dataset == "digits_images" and cascade.calibration_rows > 100
    pixels = np.zeros((4, 8, 8, 1), dtype=np.uint8)
    result = client.infer("images-cascade", pixels)
    assert len(result.as_numpy("answered_by")) == 4


def test_a_deleted_stage_makes_the_cascade_not_ready(
    client: ParadigmClient, digits_pair: tuple[str, str], digits_rows: np.ndarray
) -> None:
    _, then = digits_pair
    first = _train(client, "digits", "naive_bayes", "cascade-digits-nb-doomed")
    client.create_cascade("digits-doomed", first, then, target_accuracy=0.9)
    assert client.model_ready("digits-doomed")
    # A stage is not deleted from under its cascade unless forced, as with aliases.
    with pytest.raises(ParadigmClientError) as refused:
        client.delete_model(first)
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "'digits-doomed' version 1" in refused.value.details
    assert "force" in refused.value.details
    assert client.model_ready("digits-doomed")
    client.delete_model(first, force=True)
    assert not client.model_ready("digits-doomed")
    with pytest.raises(ParadigmClientError) as error:
        client.infer("digits-doomed", digits_rows[:3])
    assert error.value.code == grpc.StatusCode.NOT_FOUND
    assert first in error.value.details
    with pytest.raises(ParadigmClientError) as error:
        client.infer("digits-doomed", digits_rows[:3], version="7")
    assert error.value.code == grpc.StatusCode.NOT_FOUND

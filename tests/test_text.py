"""Free text: a CSV with a review column trains classical models on TF-IDF and deep ones on
learned word vectors, each one ONNX graph that tokenises inside, so every model takes the
raw strings and a client never tokenises. The tokenisation in Python (training) and in the
graph (serving) agree on held-out strings, unseen words and empty strings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from clients.bench.reviews import UNSEEN_WORDS, reviews
from clients.client import ParadigmClient, ParadigmClientError
from service.datasets.schema import ColumnInfo
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from tests.server import RunningServer

LABEL = "sentiment"
MODELS = {
    "reviews-lr": ("logistic_regression", {}),
    "reviews-nb": ("naive_bayes", {}),
    "reviews-mlp": ("mlp", {"epochs": 20}),
    "reviews-lstm": ("lstm", {"epochs": 15}),
}
#: Strings serving meets that training rows rarely have.
ODD_TEXTS = [
    "",
    "   ",
    " ".join(UNSEEN_WORDS),
    "GREAT!!! Loved it :)",
    "terrible, AWFUL; broken... refund?",
    "İstanbul \u212aelvin café naïve Ünïcödé ÉCOLE straße",
    "1234 a1b2 snake_case hy-phen it's don't",
    "\u4e2d\u6587 \U0001f600 emoji great",
    "great " * 300,
]


def write_reviews(path: Path, rows: int, seed: int) -> Path:
    pa_csv.write_csv(pa.table(reviews(rows, seed=seed)), path)
    return path


@pytest.fixture(scope="module")
def reviews_dataset(client: ParadigmClient, tmp_path_factory: pytest.TempPathFactory) -> pb.Dataset:
    path = write_reviews(tmp_path_factory.mktemp("reviews") / "reviews.csv", 600, seed=1)
    return client.upload_dataset("reviews", path, label_column=LABEL)


@pytest.fixture(scope="module")
def text_models(client: ParadigmClient, reviews_dataset: pb.Dataset) -> dict[str, pb.Job]:
    started = {
        name: client.start_training(
            "reviews", algorithm, model_name=name, seed=0, hyperparameters=params
        )
        for name, (algorithm, params) in MODELS.items()
    }
    return {name: client.wait_for_job(job.id) for name, job in started.items()}


def test_a_text_column_is_a_model_input(reviews_dataset: pb.Dataset) -> None:
    kinds = {c.name: pb.ColumnKind.Name(c.kind) for c in reviews_dataset.columns}
    assert kinds == {"review": "COLUMN_KIND_TEXT", "product": "COLUMN_KIND_CATEGORICAL"}
    assert reviews_dataset.n_features == 2
    assert not any("review" in warning for warning in reviews_dataset.warnings)


def test_both_paradigms_take_raw_strings_with_one_signature(
    client: ParadigmClient, text_models: dict[str, pb.Job]
) -> None:
    signatures = set()
    for name, job in text_models.items():
        assert job.state == pb.JOB_STATE_SUCCEEDED, (name, job.error)
        assert job.metrics["accuracy"] > 0.7, (name, dict(job.metrics))
        metadata = client.model_metadata(name)
        signatures.add(tuple((t.name, t.datatype, tuple(t.shape)) for t in metadata.inputs))
        assert {t.name: t.datatype for t in metadata.outputs} == {
            "label": "BYTES",
            "probabilities": "FP32",
        }
        # Held-out rows, an empty review and one of unseen words, checked by the job.
        assert client.get_model(name).parity_max_abs_error < 1e-4, name
    assert signatures == {(("review", "BYTES", (-1, 1)), ("product", "BYTES", (-1, 1)))}
    naive_bayes = client.get_model("reviews-nb")
    assert naive_bayes.hyperparameters["distribution"].string_value == "multinomial"


def test_predict_raw_strings_unseen_words_and_empty_ones(
    client: ParadigmClient, text_models: dict[str, pb.Job]
) -> None:
    held_out = reviews(80, seed=9, blank=0.0)
    expected = np.array(held_out[LABEL])
    odd = {"review": [*ODD_TEXTS, None], "product": ["lamp"] * (len(ODD_TEXTS) + 1)}
    for name in text_models:
        prediction = client.predict(name, held_out)
        assert prediction.left_out == [LABEL]
        assert np.mean(prediction.outputs["label"] == expected) > 0.7, name
        answer = client.predict(name, odd)
        assert set(answer.outputs["label"]) <= {"positive", "negative"}
        probabilities = answer.outputs["probabilities"]
        assert np.all(np.isfinite(probabilities))
        assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        # A missing review is the empty string, and blanks are no words at all.
        assert np.allclose(probabilities[0], probabilities[-1])
        assert np.allclose(probabilities[0], probabilities[1])
        # One row's answer does not depend on the rows sent with it (padding, batch width).
        alone = client.predict(name, {"review": [ODD_TEXTS[3]], "product": ["lamp"]})
        assert np.allclose(alone.outputs["probabilities"][0], probabilities[3], atol=1e-5)


def test_cli_predict_sends_the_text_column_of_a_csv(
    server: RunningServer, text_models: dict[str, pb.Job], tmp_path: Path
) -> None:
    rows = write_reviews(tmp_path / "rows.csv", 5, seed=3)
    for name in ("reviews-lr", "reviews-lstm"):
        predicted = subprocess.run(
            [sys.executable, "-m", "clients.cli", "--target", server.target, "predict", name,
             str(rows)],
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
        assert predicted.returncode == 0, predicted.stderr
        lines = [line for line in predicted.stdout.splitlines() if not line.startswith("#")]
        assert len(lines) == 5 and all(
            line.split()[0] in ("positive", "negative") for line in lines
        )


def test_tritonclient_sends_raw_strings(
    server: RunningServer, text_models: dict[str, pb.Job]
) -> None:
    # In a subprocess: tritonclient's protobufs and ours clash in one process.
    done = subprocess.run(
        [sys.executable, "-m", "tests.triton_probe", "--columns", server.target, "reviews-mlp"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert set(answer["labels"]) <= {"positive", "negative"}
    assert answer["input_datatypes"] == {"review": "BYTES", "product": "BYTES"}


def test_networks_that_cannot_read_text_are_refused(
    client: ParadigmClient, reviews_dataset: pb.Dataset
) -> None:
    for algorithm, fragment in (("autoencoder", "text columns"), ("cnn", "is a table of")):
        with pytest.raises(ParadigmClientError) as error:
            client.start_training("reviews", algorithm)
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in error.value.details


# --------------------------------------------------------------------------- one tokenisation


@pytest.mark.parametrize("deep", [False, True], ids=["tfidf", "token-ids"])
def test_python_and_the_graph_tokenise_alike(deep: bool) -> None:
    """The preprocessing graph against the Python that made the training rows, on held-out
    reviews, strings with every kind of character, and batches of empty strings only."""
    from service.worker import columns

    specs = [ColumnInfo("review", "text", "string"), ColumnInfo("product", "categorical", "string")]
    train = [text or "" for text in reviews(300, seed=4)["review"]]

    def rows(texts: list[str]) -> columns.Columns:
        return columns.Columns(
            specs,
            {
                "review": np.array(texts, dtype=object),
                "product": np.array(["lamp"] * len(texts), dtype=object),
            },
        )

    tokens = columns.TokenSettings(vocabulary_size=200, length=16) if deep else None
    preprocessor = columns.Preprocessor(specs, tokens=tokens)
    preprocessor.fit(rows(train))
    session = ort.InferenceSession(preprocessor.to_onnx().SerializeToString())
    held_out = [text or "" for text in reviews(100, seed=5)["review"]]
    for batch in (held_out + ODD_TEXTS, [""], ["", "   "], [ODD_TEXTS[2]], ["great " * 300]):
        python = preprocessor.transform(rows(batch))
        graph = session.run(None, preprocessor.feeds(rows(batch)))[0]
        assert graph.shape == python.shape
        if deep:
            assert np.array_equal(graph, python), batch
        else:
            assert np.abs(graph - python).max() < 1e-6, batch

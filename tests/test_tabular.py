"""Real tables: a CSV with words, blanks and string labels uploads, trains in both paradigms
into one ONNX graph each, and answers raw rows through our client, the CLI and tritonclient.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import generate_latest

from clients.client import ParadigmClient, ParadigmClientError
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from tests.server import RunningServer

CITIES = ["Oslo", "Lima", "Pune", "Kyiv"]
ROWS = 400
LABEL = "churn"
INPUTS = ["age", "income", "city", "plan", "member", "notes"]


def churn_table(rows: int = ROWS, seed: int = 0) -> pa.Table:
    """A customer table: an id, a name, numbers with blanks, words with blanks, yes/no, free
    text, and a named label that follows from the other columns (so it can be learned)."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, rows).astype(float)
    income = rng.normal(50_000, 15_000, rows).round(2)
    city = rng.choice(CITIES, rows).astype(object)
    plan = rng.choice(["basic", "pro"], rows).astype(object)
    member = rng.choice(["yes", "no"], rows)
    leave = ((plan == "basic") & (age < 40)) | (city == "Lima")
    age[rng.random(rows) < 0.05] = np.nan
    city[rng.random(rows) < 0.05] = None
    notes = [
        f"customer called {i % 7} times about the {p} plan and said it was fine overall"
        for i, p in enumerate(plan)
    ]
    return pa.table(
        {
            "id": np.arange(1000, 1000 + rows),
            "name": [f"customer-{i:05d}" for i in range(rows)],
            "age": pa.array(age, from_pandas=True),
            "income": income,
            "city": pa.array(list(city), pa.string()),
            "plan": pa.array(list(plan), pa.string()),
            "member": member,
            "notes": notes,
            LABEL: np.where(leave, "leave", "stay"),
        }
    )


def write_csv(table: pa.Table, path: Path) -> Path:
    import pyarrow.csv as pa_csv

    pa_csv.write_csv(table, path)
    return path


@pytest.fixture(scope="module")
def churn(client: ParadigmClient, tmp_path_factory: pytest.TempPathFactory) -> pb.Dataset:
    path = write_csv(churn_table(), tmp_path_factory.mktemp("churn") / "churn.csv")
    return client.upload_dataset("churn", path, label_column=LABEL)


@pytest.fixture(scope="module")
def churn_models(client: ParadigmClient, churn: pb.Dataset) -> dict[str, pb.Job]:
    """One classical and one deep model of the same table, trained side by side."""
    started = {
        "logistic_regression": client.start_training(
            "churn", "logistic_regression", model_name="churn-lr", seed=0
        ),
        "random_forest": client.start_training(
            "churn", "random_forest", model_name="churn-rf", seed=0
        ),
        "mlp": client.start_training(
            "churn", "mlp", model_name="churn-mlp", seed=0, hyperparameters={"epochs": 40}
        ),
    }
    return {name: client.wait_for_job(job.id) for name, job in started.items()}


def test_upload_infers_kinds_counts_missing_and_names_classes(churn: pb.Dataset) -> None:
    kinds = {c.name: pb.ColumnKind.Name(c.kind) for c in churn.columns}
    assert kinds == {
        "id": "COLUMN_KIND_IGNORED",
        "name": "COLUMN_KIND_IGNORED",
        "age": "COLUMN_KIND_NUMERIC",
        "income": "COLUMN_KIND_NUMERIC",
        "city": "COLUMN_KIND_CATEGORICAL",
        "plan": "COLUMN_KIND_CATEGORICAL",
        "member": "COLUMN_KIND_CATEGORICAL",
        "notes": "COLUMN_KIND_TEXT",
    }
    table = churn_table()
    by_name = {c.name: c for c in churn.columns}
    assert by_name["age"].missing == int(np.isnan(table.column("age").to_numpy()).sum()) > 0
    assert by_name["city"].missing == table.column("city").null_count > 0
    assert {v.value for v in by_name["city"].top} == set(CITIES)
    assert churn.task == pb.TASK_CLASSIFICATION and churn.label_column == LABEL
    counts = {c.value: c.count for c in churn.classes}
    values, numbers = np.unique(table.column(LABEL).to_numpy(), return_counts=True)
    expected = dict(zip(values, numbers, strict=True))
    assert counts == {k: int(v) for k, v in expected.items()}
    assert churn.n_features == len(INPUTS)
    warned = " ".join(churn.warnings)
    # Free text is a model input now (test_text.py): no note leaves it out.
    assert "'id'" in warned and "'name'" in warned and "'notes'" not in warned


def test_column_kinds_given_at_upload_and_parquet(client: ParadigmClient, tmp_path: Path) -> None:
    path = tmp_path / "churn.parquet"
    pq.write_table(churn_table(rows=120, seed=1), path)
    dataset = client.upload_dataset(
        "churn-given",
        path,
        label_column=LABEL,
        column_kinds={"id": "numeric", "member": "boolean", "notes": "ignored"},
    )
    by_name = {c.name: c for c in dataset.columns}
    assert by_name["id"].kind == pb.COLUMN_KIND_NUMERIC and by_name["id"].given
    assert by_name["member"].kind == pb.COLUMN_KIND_BOOLEAN and by_name["member"].dtype == "bool"
    assert by_name["notes"].kind == pb.COLUMN_KIND_IGNORED
    assert by_name["age"].kind == pb.COLUMN_KIND_NUMERIC and not by_name["age"].given
    shown = client.get_dataset("churn-given")
    assert [c.name for c in shown.columns] == [c.name for c in dataset.columns]

    # A given boolean column is served as BOOL; the given numeric id as FP32.
    job = client.wait_for_job(
        client.start_training("churn-given", "decision_tree", model_name="churn-given-tree").id
    )
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
    inputs = {t.name: t.datatype for t in client.model_metadata("churn-given-tree").inputs}
    assert inputs["member"] == "BOOL" and inputs["id"] == "FP32" and "notes" not in inputs
    rows = churn_table(rows=4, seed=5).to_pydict()
    rows["member"] = [True, False, True, False]
    assert client.predict("churn-given-tree", rows).outputs["label"].shape == (4,)


def test_both_paradigms_share_one_signature_and_answer_class_names(
    client: ParadigmClient, churn_models: dict[str, pb.Job]
) -> None:
    for algorithm, job in churn_models.items():
        assert job.state == pb.JOB_STATE_SUCCEEDED, (algorithm, job.error)
    signatures = set()
    for name in ("churn-lr", "churn-rf", "churn-mlp"):
        metadata = client.model_metadata(name)
        signatures.add(tuple((t.name, t.datatype, tuple(t.shape)) for t in metadata.inputs))
        outputs = {t.name: t.datatype for t in metadata.outputs}
        assert outputs == {"label": "BYTES", "probabilities": "FP32"}
        assert json.loads(metadata.parameters["classes"].string_param) == ["leave", "stay"]
        model = client.get_model(name)
        assert model.parity_max_abs_error < 1e-3
    [signature] = signatures
    assert [name for name, _, _ in signature] == INPUTS
    assert dict((n, d) for n, d, _ in signature) == {
        "age": "FP32", "income": "FP32", "city": "BYTES", "plan": "BYTES", "member": "BYTES",
        "notes": "BYTES",
    }  # fmt: skip
    assert churn_models["logistic_regression"].metrics["accuracy"] > 0.8


def test_predict_raw_rows_from_a_table_a_dataframe_and_a_dict(
    client: ParadigmClient, churn_models: dict[str, pb.Job], server: RunningServer
) -> None:
    rows = churn_table(rows=30, seed=7)
    expected = rows.column(LABEL).to_numpy(zero_copy_only=False)
    answers = []
    for data in (rows, rows.to_pandas(), rows.to_pydict()):
        prediction = client.predict("churn-lr", data)
        assert prediction.classes == ["leave", "stay"]
        assert prediction.outputs["label"].shape == (30,)
        assert set(prediction.left_out) == {"id", "name", LABEL}
        answers.append(list(prediction.outputs["label"]))
    assert answers[0] == answers[1] == answers[2]
    assert np.mean(np.array(answers[0]) == expected) > 0.7

    # Blanks everywhere and a city never seen in training: still an answer, and counted.
    before = _unknown_categories(server, "churn-mlp", "city")
    odd = {
        "age": [None, 30.0], "income": [None, 40_000.0], "city": [None, "Atlantis"],
        "plan": ["", "basic"], "member": ["yes", None], "notes": [None, "never seen words"],
    }  # fmt: skip
    prediction = client.predict("churn-mlp", odd)
    assert set(prediction.outputs["label"]) <= {"leave", "stay"}
    assert np.allclose(prediction.outputs["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    assert _unknown_categories(server, "churn-mlp", "city") == before + 1


def _unknown_categories(server: RunningServer, model: str, column: str) -> float:
    text = generate_latest(server.metrics_registry).decode()
    for line in text.splitlines():
        if line.startswith("paradigm_unknown_categories_total{") and (
            f'model="{model}"' in line and f'column="{column}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no unknown-category series for {model}/{column}")


def test_cli_show_and_predict_on_a_csv(
    server: RunningServer, churn_models: dict[str, pb.Job], tmp_path: Path
) -> None:
    shown = _paradigm(server, "datasets", "show", "churn")
    assert shown.returncode == 0, shown.stderr
    assert "categorical" in shown.stdout and "Oslo" in shown.stdout and "leave" in shown.stdout
    rows = write_csv(churn_table(rows=5, seed=3), tmp_path / "rows.csv")
    predicted = _paradigm(server, "predict", "churn-rf", str(rows))
    assert predicted.returncode == 0, predicted.stderr
    lines = [line for line in predicted.stdout.splitlines() if not line.startswith("#")]
    assert len(lines) == 5 and all(line.split()[0] in ("leave", "stay") for line in lines)
    assert "left out" in predicted.stderr and "'name'" in predicted.stderr
    missing = write_csv(churn_table(rows=5).drop_columns(["city"]), tmp_path / "short.csv")
    refused = _paradigm(server, "predict", "churn-rf", str(missing))
    assert refused.returncode != 0 and "'city'" in refused.stderr


def _paradigm(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", "--target", server.target, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_tritonclient_sends_columns_raw(
    server: RunningServer, churn_models: dict[str, pb.Job]
) -> None:
    # In a subprocess: tritonclient's protobufs and ours clash in one process.
    done = subprocess.run(
        [sys.executable, "-m", "tests.triton_probe", "--columns", server.target, "churn-lr"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["labels"] == ["leave", "stay"] or set(answer["labels"]) <= {"leave", "stay"}
    assert answer["input_datatypes"]["city"] == "BYTES"


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        (lambda c: {k: v for k, v in c.items() if k != "plan"}, "missing input 'plan'"),
        (lambda c: {**c, "age": c["age"][:1]}, "rows but"),
        (lambda c: {**c, "city": np.array([[b"\xff\xfe"], [b"Oslo"]], dtype=object)}, "UTF-8"),
        (lambda c: {**c, "income": np.array([[np.inf], [1.0]], np.float32)}, "infinity"),
    ],
)
def test_bad_column_requests_are_invalid_argument(
    client: ParadigmClient, churn_models: dict[str, pb.Job], inputs: object, fragment: str
) -> None:
    columns = {
        "age": np.array([[30.0], [np.nan]], np.float32),
        "income": np.array([[1.0], [2.0]], np.float32),
        "city": np.array([["Oslo"], [""]], dtype=object),
        "plan": np.array([["pro"], ["basic"]], dtype=object),
        "member": np.array([["yes"], ["no"]], dtype=object),
        "notes": np.array([["called twice"], [""]], dtype=object),
    }
    assert client.infer("churn-lr", columns).as_numpy("label").shape == (2,)  # NaN: imputed
    with pytest.raises(ParadigmClientError) as error:
        client.infer("churn-lr", inputs(columns))  # type: ignore[operator]
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in error.value.details


@pytest.mark.parametrize(
    ("name", "data", "kinds", "fragment"),
    [
        ("no-label", b"a,b\n1,x\n2,y\n", {}, "label column 'churn' not in the header"),
        ("blank-label", b"a,churn\n1,\n2,\n", {}, "blank in every row"),
        ("bad-kind", b"a,churn\n1,x\nfoo,y\n", {"a": "numeric"}, "CSV line 3 holds 'foo'"),
        ("bad-bool", b"a,churn\nmaybe,x\nyes,y\n", {"a": "boolean"}, "cannot be boolean"),
        ("ragged", b"a,churn\n1,x\n2,y,3\n", {}, "CSV line 3 has 3 fields"),
        ("not-utf8", b"a,churn\n\xff\xfe,x\nb,y\n", {}, "UTF-8"),
        ("unknown-kind-column", b"a,churn\n1,x\n2,y\n", {"zzz": "numeric"}, "'zzz'"),
    ],
)
def test_bad_tables_name_the_column_and_row(
    client: ParadigmClient,
    tmp_path: Path,
    name: str,
    data: bytes,
    kinds: dict[str, str],
    fragment: str,
) -> None:
    path = tmp_path / f"{name}.csv"
    path.write_bytes(data)
    with pytest.raises(ParadigmClientError) as error:
        client.upload_dataset(name, path, label_column=LABEL, column_kinds=kinds)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in error.value.details
    assert name not in {d.name for d in client.list_datasets()}


def test_damaged_and_nested_parquet_are_refused(client: ParadigmClient, tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    pq.write_table(churn_table(rows=20), good)
    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    nested = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"tags": [[1, 2], [3]], LABEL: ["a", "b"]}), nested)
    for path, fragment in ((damaged, "not a readable Parquet file"), (nested, "nested type")):
        with pytest.raises(ParadigmClientError) as error:
            client.upload_dataset(path.stem, path, label_column=LABEL)
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in error.value.details


def test_image_networks_refuse_a_table(client: ParadigmClient, churn: pb.Dataset) -> None:
    # churn has a text column, which lstm reads (test_text.py); a table of numbers it refuses.
    for algorithm, dataset in (("cnn", "churn"), ("lstm", "penguins")):
        with pytest.raises(ParadigmClientError) as error:
            client.start_training(dataset, algorithm)
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "is a table of" in error.value.details
    with pytest.raises(ParadigmClientError) as error:
        client.start_training("churn", "linear_regression")
    assert "labels are class names" in error.value.details


def test_builtin_penguins_is_a_mixed_table(client: ParadigmClient) -> None:
    penguins = client.get_dataset("penguins")
    assert penguins.builtin and penguins.label_column == "species"
    kinds = {c.name: c.kind for c in penguins.columns}
    assert kinds["island"] == pb.COLUMN_KIND_CATEGORICAL
    assert kinds["bill_length_mm"] == pb.COLUMN_KIND_NUMERIC
    assert {c.value for c in penguins.classes} == {"Adelie", "Chinstrap", "Gentoo"}
    assert sum(c.missing for c in penguins.columns) > 0


def test_numbers_only_table_keeps_one_input(client: ParadigmClient, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(120, 3)).round(3)
    x[::17, 1] = np.nan  # blanks: imputed inside the graph, so NaN is allowed when served
    table = pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": (x[:, 0] > 0).astype(int)})
    client.upload_dataset("numbers", write_csv(table, tmp_path / "numbers.csv"), label_column="y")
    job = client.wait_for_job(client.start_training("numbers", "logistic_regression").id)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
    [single] = client.model_metadata(job.model_name).inputs
    assert (single.name, single.datatype, list(single.shape)) == ("input", "FP32", [-1, 3])
    rows = np.array([[0.5, np.nan, 1.0], [-1.0, 0.2, 0.0]], dtype=np.float32)
    assert client.infer(job.model_name, rows).as_numpy("label").tolist() == [1, 0]
    columns = client.start_training("numbers", "logistic_regression", column_inputs=True)
    job = client.wait_for_job(columns.id)
    assert [t.name for t in client.model_metadata(job.model_name).inputs] == ["a", "b", "c"]
    for version in ("1", "2"):  # one input, then one per column: neither is explained yet
        with pytest.raises(ParadigmClientError) as error:
            client.explain(job.model_name, version=version)
        assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "is a table" in error.value.details or "one FP32 input" in error.value.details

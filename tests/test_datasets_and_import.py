"""Dataset uploads (npz, CSV) and model import (ONNX, skops) through the real server."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from clients.client import JobFailed, ParadigmClient, ParadigmClientError
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from tests.server import RunningServer


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_npz_upload_trains_and_serves(client: ParadigmClient, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    np.savez(tmp_path / "blobs.npz", X=X, y=y)
    dataset = client.upload_dataset("blobs", tmp_path / "blobs.npz", chunk_size=512)
    assert (dataset.n_samples, dataset.n_features, dataset.n_classes) == (120, 3, 2)
    assert dataset.task == pb.TASK_CLASSIFICATION and not dataset.builtin
    assert client.get_dataset("blobs").fingerprint == dataset.fingerprint
    job = client.wait_for_job(client.start_training("blobs", "logistic_regression").id)
    assert job.metrics["accuracy"] > 0.85
    served = client.infer("blobs-logistic_regression", X).as_numpy("label")
    assert np.mean(served == y) > 0.85


def test_images_in_npz_keep_their_shape(client: ParadigmClient, tmp_path: Path) -> None:
    X = np.random.default_rng(1).random((40, 6, 5)).astype(np.float32)
    np.savez(tmp_path / "img.npz", X=X, y=np.arange(40) % 2)
    dataset = client.upload_dataset("tiny-images", tmp_path / "img.npz")
    assert list(dataset.image_shape) == [6, 5] and dataset.n_features == 30


def test_csv_upload_with_named_label(client: ParadigmClient, tmp_path: Path) -> None:
    lines = ["size,rooms,price"] + [f"{i},{i % 5 + 1},{3 * i + 7.5}" for i in range(60)]
    path = write_csv(tmp_path / "houses.csv", "\n".join(lines) + "\n")
    dataset = client.upload_dataset("houses", path, label_column="price")
    assert dataset.task == pb.TASK_REGRESSION
    assert list(dataset.feature_names) == ["size", "rooms"]
    job = client.wait_for_job(client.start_training("houses", "linear_regression").id)
    assert job.metrics["r2"] > 0.99


@pytest.mark.parametrize(
    ("name", "content", "label", "fragment"),
    [
        ("infinity", "a,b,y\n1,2,0\n3,inf,1\n", "y", "line 3, column 'b': inf is beyond"),
        ("bad-label", "a,b,y\n1,2,0\n", "target", "label column 'target' not in the header"),
        ("ragged", "a,b,y\n1,2,0\n1,2\n", "y", "line 3 has 2 fields"),
        ("blank-labels", "a,b,y\n1,2,\n3,4,NA\n", "y", "blank in every row"),
        ("no-rows", "a,b,y\n", "y", "no data rows"),
    ],
)
def test_bad_csv_is_invalid_argument(
    client: ParadigmClient, tmp_path: Path, name: str, content: str, label: str, fragment: str
) -> None:
    path = write_csv(tmp_path / f"{name}.csv", content)
    with pytest.raises(ParadigmClientError) as error:
        client.upload_dataset(name, path, label_column=label)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in error.value.details
    assert name not in {d.name for d in client.list_datasets()}


def test_bad_npz_is_invalid_argument(client: ParadigmClient, tmp_path: Path) -> None:
    cases = {
        "objects": ({"X": np.array([{"a": 1}], dtype=object), "y": np.zeros(1)}, "pickled"),
        "no-y": ({"X": np.zeros((3, 2))}, "missing ['y']"),
        "short-y": ({"X": np.zeros((3, 2)), "y": np.zeros(2)}, "one label per row"),
        "inf": ({"X": np.full((3, 2), np.inf), "y": np.zeros(3)}, "NaN or infinity"),
    }
    for name, (arrays, fragment) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)  # type: ignore[arg-type]
        with pytest.raises(ParadigmClientError) as error:
            client.upload_dataset(name, path)
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT, name
        assert fragment in error.value.details, (name, error.value.details)
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(ParadigmClientError) as error:
        client.upload_dataset("junk", tmp_path / "junk.npz")
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_upload_name_rules_and_builtins(client: ParadigmClient, tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", X=np.zeros((4, 2)), y=np.arange(4))
    with pytest.raises(ParadigmClientError) as error:
        client.upload_dataset("iris", tmp_path / "d.npz")
    assert error.value.code == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(ParadigmClientError) as error:
        client.upload_dataset("Bad Name", tmp_path / "d.npz")
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ParadigmClientError) as error:
        client.delete_dataset("iris")
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_upload_over_the_limit_is_resource_exhausted(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data", max_upload_bytes=4096)
    try:
        np.savez(tmp_path / "big.npz", X=np.zeros((1000, 4)), y=np.zeros(1000))
        with ParadigmClient(server.target) as client:
            with pytest.raises(ParadigmClientError) as error:
                client.upload_dataset("big", tmp_path / "big.npz", chunk_size=1024)
            assert error.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "4096 bytes" in error.value.details
            assert "big" not in {d.name for d in client.list_datasets()}
    finally:
        server.stop()


def test_import_onnx_and_skops(client: ParadigmClient, iris_model: str, tmp_path: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier
    from skops.io import dump

    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    # ONNX round trip: export a served model and import it under a new name.
    client.export_model(iris_model, tmp_path / "lr.onnx")
    job = client.wait_for_job(client.import_model("lr-copy", tmp_path / "lr.onnx").id)
    assert job.kind == pb.JOB_KIND_IMPORT and job.paradigm == pb.PARADIGM_CLASSICAL
    original = client.infer(iris_model, X).as_numpy("probabilities")
    copied = client.infer("lr-copy", X).as_numpy("probabilities")
    np.testing.assert_array_equal(original, copied)
    # skops: converted to ONNX on import, never unpickled.
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)
    dump(tree, tmp_path / "tree.skops")
    with pytest.raises(JobFailed) as refused:
        client.wait_for_job(client.import_model("tree", tmp_path / "tree.skops").id)
    assert "sklearn.tree._tree.Tree" in refused.value.job.error
    trusted = ["sklearn.tree._tree.Tree"]
    job = client.import_model("tree", tmp_path / "tree.skops", trusted_types=trusted)
    client.wait_for_job(job.id)
    served = client.infer("tree", X).as_numpy("label")
    np.testing.assert_array_equal(served, tree.predict(X))
    model = client.get_model("tree")
    assert model.algorithm == "imported" and model.parity_max_abs_error < 1e-5


def test_import_refuses_trusting_types_the_server_does_not_allow(
    client: ParadigmClient, tmp_path: Path
) -> None:
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier
    from skops.io import dump

    X, y = load_iris(return_X_y=True)
    dump(DecisionTreeClassifier(max_depth=2).fit(X, y), tmp_path / "tree.skops")
    with pytest.raises(ParadigmClientError) as refused:
        client.import_model(
            "evil", tmp_path / "tree.skops", trusted_types=["sklearn.tree._tree.Tree", "os.system"]
        )
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        "os.system" in refused.value.details and "SKOPS_TRUSTED_PREFIXES" in refused.value.details
    )
    assert "evil" not in {m.name for m in client.list_models()}


def test_import_refuses_garbage(client: ParadigmClient, tmp_path: Path) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage")
    # Checked before a job is queued: the servicer reads the file's protobuf structure.
    with pytest.raises(ParadigmClientError) as failure:
        client.import_model("junk", tmp_path / "junk.onnx")
    assert failure.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not an ONNX model" in failure.value.details
    with pytest.raises(ParadigmClientError) as error:
        client.get_model("junk")
    assert error.value.code == grpc.StatusCode.NOT_FOUND


def test_restart_serves_the_same_models(tmp_path: Path) -> None:
    data = tmp_path / "data"
    X = np.random.default_rng(2).normal(5, 2, size=(16, 4)).astype(np.float32)
    first = RunningServer(data)
    try:
        with ParadigmClient(first.target) as client:
            client.wait_for_job(client.start_training("iris", "knn", model_name="keep").id)
            before = client.infer("keep", X).as_numpy("probabilities")
            checksum = client.get_model("keep").checksum
    finally:
        first.stop()
    second = RunningServer(data)
    try:
        with ParadigmClient(second.target) as client:
            assert [m.name for m in client.list_models()] == ["keep"]
            assert client.get_model("keep").checksum == checksum
            np.testing.assert_array_equal(client.infer("keep", X).as_numpy("probabilities"), before)
            job = client.wait_for_job(client.start_training("iris", "knn", model_name="keep").id)
            assert job.model_version == "2"
    finally:
        second.stop()

"""Image datasets: an archive of class folders uploads (decoded in a worker), shows a contact
sheet, trains classical (on pixels and on the hand-made HOG features) and deep models whose
one graph takes raw UINT8 pixels and answers class names, and answers image files through
our client, the CLI and tritonclient. Bad archives are refused naming the member.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image, ImageDraw

from clients.client import ParadigmClient, ParadigmClientError
from service.errors import ResourceExhausted
from service.gen.paradigm.v1 import paradigm_pb2 as pb
from service.worker.datasets import images as image_archives
from service.worker.image_inputs import ImageFront
from tests.server import RunningServer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHAPES = ("circle", "square")
PER_CLASS = 40


def shape_picture(shape: str, seed: int, size: tuple[int, int] = (40, 36)) -> Image.Image:
    """A filled circle or square of a random colour and place on white."""
    rng = np.random.default_rng(seed)
    picture = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(picture)
    x, y = (int(v) for v in rng.integers(2, 12, 2))
    colour = tuple(int(c) for c in rng.integers(0, 180, 3))
    box = (x, y, x + 22, y + 22)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    else:
        draw.rectangle(box, fill=colour)
    return picture


def encoded(picture: Image.Image, file_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=file_format)
    return buffer.getvalue()


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def shapes_members(per_class: int = PER_CLASS) -> dict[str, bytes]:
    """Circles and squares in class folders inside one wrapping folder, PNG and JPEG of
    varied sizes, plus the clutter a zipped folder carries."""
    members = {}
    for index in range(per_class):
        for shape in SHAPES:
            size = (40 + index % 9, 36 + index % 5)
            picture = shape_picture(shape, seed=index * 2 + (shape == "square"), size=size)
            suffix, file_format = ("jpg", "JPEG") if index % 3 == 0 else ("png", "PNG")
            members[f"shapes/{shape}/{index:03d}.{suffix}"] = encoded(picture, file_format)
    members["shapes/README.txt"] = b"circles and squares"
    members["shapes/.DS_Store"] = b"\x00\x01"
    members["__MACOSX/shapes/._README.txt"] = b"\x00"
    return members


def digits_members(classes: tuple[int, ...] = (0, 1, 7), side: int = 24) -> dict[str, bytes]:
    """scikit-learn's 8x8 digits, up-sampled to side x side grey PNGs, one folder a digit."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    members = {}
    for digit in classes:
        for index, image in enumerate(digits.images[digits.target == digit][:50]):
            grey = Image.fromarray((image * 255 / 16).astype(np.uint8), mode="L")
            members[f"{digit}/{index:03d}.png"] = encoded(grey.resize((side, side)))
    return members


def _paradigm(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", "--target", server.target, *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def shapes(client: ParadigmClient, tmp_path_factory: pytest.TempPathFactory) -> pb.Dataset:
    path = write_zip(tmp_path_factory.mktemp("shapes") / "shapes.zip", shapes_members())
    return client.upload_dataset("shapes", path)


MODELS: dict[str, tuple[str, dict[str, int | float | str | bool], str]] = {
    "shapes-lr": ("logistic_regression", {}, ""),
    "shapes-lr-hog": ("logistic_regression", {}, "hog"),
    "shapes-mlp": ("mlp", {"epochs": 3, "hidden_units": 32}, ""),
    "shapes-cnn": ("cnn", {"epochs": 2, "filters_1": 8, "filters_2": 8, "batch_size": 32}, ""),
}


@pytest.fixture(scope="module")
def shape_models(client: ParadigmClient, shapes: pb.Dataset) -> dict[str, pb.Job]:
    started = {
        name: client.start_training(
            "shapes", algorithm, hyperparameters=params, image_features=features, model_name=name
        )
        for name, (algorithm, params, features) in MODELS.items()
    }
    return {name: client.wait_for_job(job.id) for name, job in started.items()}


def test_an_archive_of_class_folders_uploads_as_uint8_images(
    client: ParadigmClient, shapes: pb.Dataset
) -> None:
    assert shapes.n_samples == 2 * PER_CLASS
    assert list(shapes.image_shape) == [32, 32, 3]  # the default size, RGB
    assert shapes.n_features == 32 * 32 * 3 and shapes.n_classes == 2
    assert shapes.task == pb.TASK_CLASSIFICATION
    assert [(c.value, c.count) for c in shapes.classes] == [(s, PER_CLASS) for s in SHAPES]
    # The README is named as left out; the hidden clutter is not worth a word.
    assert any("README.txt" in warning for warning in shapes.warnings)
    assert not any("DS_Store" in warning for warning in shapes.warnings)
    assert not client.get_dataset("shapes").contact_sheet  # only when asked for
    sheet = client.get_dataset("shapes", contact_sheet=True).contact_sheet
    assert sheet.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(sheet)) as picture:
        assert picture.format == "PNG" and picture.height >= 2 * 64  # a row per class


def test_cli_uploads_a_tar_gz_grey_and_writes_the_contact_sheet(
    server: RunningServer, tmp_path: Path
) -> None:
    archive = write_tar(tmp_path / "digits.tar.gz", digits_members())
    uploaded = _paradigm(
        server, "datasets", "upload", "digit-pictures", str(archive), "--image-size", "16",
        "--grayscale",
    )  # fmt: skip
    assert uploaded.returncode == 0, uploaded.stderr
    assert "[16, 16, 1]" in uploaded.stdout
    sheet = tmp_path / "sheet.png"
    shown = _paradigm(server, "datasets", "show", "digit-pictures", "--contact-sheet", str(sheet))
    assert shown.returncode == 0, shown.stderr
    assert "images [16, 16, 1]" in shown.stdout and str(sheet) in shown.stdout
    for digit in ("0", "1", "7"):
        assert any(line.split()[:2] == [digit, "50"] for line in shown.stdout.splitlines())
    with Image.open(sheet) as picture:
        assert picture.format == "PNG"
    # Trains a classical model on the hand-made features, as the CLI asks.
    trained = _paradigm(
        server, "train", "digit-pictures", "random_forest", "--param", "n_estimators=20",
        "--image-features", "hog", "--name", "digit-pictures-rf",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr


def test_image_models_take_uint8_pixels_and_answer_class_names(
    client: ParadigmClient, shape_models: dict[str, pb.Job]
) -> None:
    for name, job in shape_models.items():
        assert job.state == pb.JOB_STATE_SUCCEEDED, (name, job.error)
        metadata = client.model_metadata(name)
        [image] = metadata.inputs
        assert (image.name, image.datatype, list(image.shape)) == (
            "input",
            "UINT8",
            [-1, 32, 32, 3],
        )
        outputs = {o.name: o.datatype for o in metadata.outputs}
        assert outputs == {"label": "BYTES", "probabilities": "FP32"}, name
        assert json.loads(metadata.parameters["classes"].string_param) == list(SHAPES)
        model = client.get_model(name)
        assert model.parity_max_abs_error < 1e-3, name
        features = model.hyperparameters["image_features"].string_value
        assert features == (MODELS[name][2] or "pixels")
    hog = client.get_model("shapes-lr-hog")
    # Oriented gradients tell a circle from a square at any place and colour.
    assert hog.metrics["accuracy"] >= 0.9


def test_predict_image_files_through_the_client_and_the_cli(
    client: ParadigmClient,
    server: RunningServer,
    shape_models: dict[str, pb.Job],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "more"
    folder.mkdir()
    for index in range(3):
        (folder / f"circle{index}.png").write_bytes(encoded(shape_picture("circle", 900 + index)))
    square = tmp_path / "square.jpg"
    square.write_bytes(encoded(shape_picture("square", 950, size=(80, 60)), "JPEG"))
    grey = tmp_path / "grey.bmp"
    grey.write_bytes(encoded(shape_picture("circle", 960).convert("L"), "BMP"))
    prediction = client.predict_images("shapes-lr-hog", [square, grey, folder])
    assert [p.name for p in prediction.files] == [
        "square.jpg", "grey.bmp", "circle0.png", "circle1.png", "circle2.png"
    ]  # fmt: skip
    labels = prediction.outputs["label"].tolist()
    assert set(labels) <= set(SHAPES) and len(labels) == 5
    assert labels.count("circle") >= 3  # the model is good, not perfect
    shown = _paradigm(server, "predict", "shapes-cnn", str(square), str(grey), str(folder))
    assert shown.returncode == 0, shown.stderr
    lines = [line.split() for line in shown.stdout.splitlines() if not line.startswith("#")]
    assert [Path(line[0]).name for line in lines] == [p.name for p in prediction.files]
    for _, label, probability in lines:
        assert label in SHAPES and 0.0 <= float(probability) <= 1.0
    not_a_picture = tmp_path / "notes.png"
    not_a_picture.write_bytes(b"not a picture")
    refused = _paradigm(server, "predict", "shapes-cnn", str(not_a_picture))
    assert refused.returncode != 0 and "notes.png" in refused.stderr


def test_tritonclient_sends_raw_pixels(
    server: RunningServer, shape_models: dict[str, pb.Job], tmp_path: Path
) -> None:
    pixels = np.stack(
        [np.asarray(shape_picture(s, 970).resize((32, 32)), np.uint8) for s in SHAPES]
    )
    np.save(tmp_path / "pixels.npy", pixels)
    # In a subprocess: tritonclient's protobufs and ours clash in one process.
    done = subprocess.run(
        [sys.executable, "-m", "tests.triton_probe", "--images", server.target, "shapes-mlp",
         str(tmp_path / "pixels.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert len(answer["labels"]) == 2 and set(answer["labels"]) <= set(SHAPES)
    assert answer["inputs"][0]["datatype"] == "UINT8"


def test_refused_training_requests(client: ParadigmClient, shape_models: dict[str, pb.Job]) -> None:
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: client.start_training("shapes", "mlp", image_features="hog"), "classical"),
        (lambda: client.start_training("iris", "knn", image_features="hog"), "image dataset"),
        (lambda: client.start_training("shapes", "knn", image_features="edges"), "'edges'"),
        (lambda: client.start_training("shapes", "linear_regression"), "class names"),
    ]
    for start, fragment in cases:
        with pytest.raises(ParadigmClientError) as caught:
            start()
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in caught.value.details
    with pytest.raises(ParadigmClientError) as caught:
        client.explain("shapes-lr")
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION


def _pixel_bomb() -> bytes:
    """A small PNG whose canvas is past the pixel limit (8000 x 6000 grey zeros)."""
    return encoded(Image.new("L", (8000, 6000)))


def _one_image() -> bytes:
    return encoded(shape_picture("circle", 0))


BAD_ARCHIVES: list[tuple[str, Callable[[Path], Path], grpc.StatusCode, str]] = [
    (
        "not-an-archive",
        lambda d: _written(d / "photos.zip", b"just some text, no archive"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not a .zip, .tar or .tar.gz",
    ),
    (
        "no-class-folders",
        lambda d: write_zip(d / "flat.zip", {"a.png": _one_image(), "b.png": _one_image()}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "'a.png' is not in a class folder",
    ),
    (
        "one-class",
        lambda d: write_zip(
            d / "one.zip", {"cats/a.png": _one_image(), "cats/b.png": _one_image()}
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "one class folder ('cats')",
    ),
    (
        "undecodable",
        lambda d: write_zip(
            d / "broken.zip",
            {"cats/a.png": _one_image(), "dogs/b.png": _one_image()[:60], "dogs/c.png": b"x"},
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "'dogs/b.png'",
    ),
    (
        "pixel-bomb",
        lambda d: write_zip(
            d / "bomb.zip", {"cats/a.png": _one_image(), "dogs/huge.png": _pixel_bomb()}
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "'dogs/huge.png' is too large",
    ),
    (
        "climbs-out",
        lambda d: write_zip(
            d / "climb.zip", {"cats/a.png": _one_image(), "../../evil/b.png": _one_image()}
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "'../../evil/b.png' has an absolute path or '..'",
    ),
    (
        "absolute",
        lambda d: write_tar(
            d / "absolute.tar.gz", {"cats/a.png": _one_image(), "/tmp/evil/b.png": _one_image()}
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "absolute path",
    ),
    (
        "no-images",
        lambda d: write_zip(d / "texts.zip", {"cats/a.txt": b"meow", "dogs/b.txt": b"woof"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "no PNG, JPEG, BMP or GIF images",
    ),
]


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("case", "make", "code", "fragment"), BAD_ARCHIVES, ids=[c[0] for c in BAD_ARCHIVES]
)
def test_bad_archives_are_refused_naming_the_member(
    client: ParadigmClient,
    server: RunningServer,
    tmp_path: Path,
    case: str,
    make: Callable[[Path], Path],
    code: grpc.StatusCode,
    fragment: str,
) -> None:
    path = make(tmp_path)
    with pytest.raises(ParadigmClientError) as caught:
        client.upload_dataset(f"bad-{case}", path)
    assert caught.value.code == code, caught.value.details
    assert fragment in caught.value.details
    assert f"bad-{case}" not in {d.name for d in client.list_datasets()}
    data_dir = server.settings.data_dir
    assert not list(data_dir.parent.rglob("evil")) and not Path("/tmp/evil").exists()
    assert not list((data_dir / "datasets").glob(f".bad-{case}.*"))  # no staging left


def test_a_decompression_bomb_is_refused_before_it_unpacks(tmp_path: Path) -> None:
    # Uncompressed BMPs of zeros deflate to almost nothing. The worker function itself,
    # with a small limit: the server's is 16 times its upload limit.
    blank = encoded(Image.new("L", (400, 400)), "BMP")
    members = {f"{c}/{i}.bmp": blank for c in "ab" for i in range(3)}
    archive = write_zip(tmp_path / "bomb.zip", members)
    assert archive.stat().st_size < len(blank)
    with pytest.raises(ResourceExhausted, match=r"more than 300000 bytes \(reached at 'a/1.bmp'"):
        image_archives.ingest(
            str(archive), str(tmp_path / "data"), "bomb", image_size=8, grayscale=True,
            max_total_bytes=300_000,
        )  # fmt: skip
    assert not (tmp_path / "data" / "bomb").exists()


@pytest.mark.parametrize("features", ["pixels", "hog"])
@pytest.mark.parametrize("shape", [[32, 32, 3], [8, 8, 1], [30, 26, 1]])
def test_front_graph_matches_the_numpy_features(features: str, shape: list[int]) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6, *shape), dtype=np.uint8)
    pixels[0], pixels[1] = 0, 255
    front = ImageFront(shape, features)
    session = ort.InferenceSession(
        front.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    served = session.run(None, {"input": pixels})[0]
    trained = front.transform(pixels)
    assert served.shape == trained.shape == (6, len(front.feature_names()))
    assert np.abs(served - trained).max() < 1e-5
    assert np.all(np.isfinite(served))


def test_the_serving_side_never_imports_pillow() -> None:
    code = (
        "import sys, service.app, service.cli, service.datasets.store, service.api.paradigm; "
        "print(sorted(m for m in sys.modules if m == 'PIL' or m.startswith('PIL.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_builtin_digits_images_train_and_serve_raw_pixels(client: ParadigmClient) -> None:
    dataset = client.get_dataset("digits_images")
    assert dataset.builtin and list(dataset.image_shape) == [8, 8, 1]
    assert [c.value for c in dataset.classes] == [str(d) for d in range(10)]
    job = client.wait_for_job(
        client.start_training("digits_images", "logistic_regression", model_name="digimg-lr").id
    )
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
    assert job.metrics["accuracy"] > 0.9
    [pixels] = client.model_metadata("digimg-lr").inputs
    assert (pixels.datatype, list(pixels.shape)) == ("UINT8", [-1, 8, 8, 1])
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = np.rint(digits.images[:20] * (255 / 16)).astype(np.uint8)[..., np.newaxis]
    labels = client.infer("digimg-lr", rows).as_numpy("label")
    assert np.mean(labels.astype(str) == digits.target[:20].astype(str)) > 0.9


def test_generated_scale_set_as_images(client: ParadigmClient) -> None:
    dataset = client.generate_dataset(
        "scale-images", 300, image_size=16, seed=1, generator="digits_scaled_images"
    )
    assert list(dataset.image_shape) == [16, 16, 1] and dataset.n_classes == 10
    job = client.wait_for_job(
        client.start_training("scale-images", "logistic_regression", model_name="scale-img-lr").id
    )
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
    [pixels] = client.model_metadata("scale-img-lr").inputs
    assert (pixels.datatype, list(pixels.shape)) == ("UINT8", [-1, 16, 16, 1])
    client.delete_dataset("scale-images")

"""Run as a subprocess: talks to a Paradigm server with tritonclient, unchanged.

tritonclient's generated `inference` protobufs and ours cannot share one process (same
symbols in protobuf's pool), so the test runs this script and reads its JSON answer.
Usage: python -m tests.triton_probe HOST:PORT MODEL ROWS.npy
       python -m tests.triton_probe --columns HOST:PORT MODEL   (a table model: two rows,
       one tensor per column as its metadata says, words as BYTES)
       python -m tests.triton_probe --images HOST:PORT MODEL IMAGES.npy   (an image model:
       uint8 pixels sent as UINT8)
       python -m tests.triton_probe --version HOST:PORT MODEL VERSION ROWS.npy   (every call
       with model_version, e.g. an alias)
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException


def columns(url: str, model: str) -> None:
    """Two rows of every input a table model takes, sent raw; prints labels and datatypes."""
    client = triton.InferenceServerClient(url=url)
    metadata = client.get_model_metadata(model, as_json=True)
    samples = {"FP32": [[31.0], [float("nan")]], "BYTES": [[b"Oslo"], [b""]]}
    tensors = []
    for spec in metadata["inputs"]:
        datatype = spec["datatype"]
        values = np.array(samples[datatype], dtype=np.float32 if datatype == "FP32" else object)
        tensor = triton.InferInput(spec["name"], [2, 1], datatype)
        tensor.set_data_from_numpy(values)
        tensors.append(tensor)
    result = client.infer(model, tensors)
    labels = [v.decode() for v in result.as_numpy("label").reshape(-1)]
    datatypes = {spec["name"]: spec["datatype"] for spec in metadata["inputs"]}
    print(json.dumps({"labels": labels, "input_datatypes": datatypes}))


def images(url: str, model: str, images_path: str) -> None:
    """Raw pixels to an image model; prints the class names and the input's signature."""
    pixels = np.load(images_path)
    client = triton.InferenceServerClient(url=url)
    metadata = client.get_model_metadata(model, as_json=True)
    tensor = triton.InferInput("input", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels)
    result = client.infer(model, [tensor])
    labels = [v.decode() for v in result.as_numpy("label").reshape(-1)]
    print(json.dumps({"labels": labels, "inputs": metadata["inputs"]}))


def versioned(url: str, model: str, version: str, rows_path: str) -> None:
    """Every call with model_version set (a number or an alias): readiness, metadata and
    labels; then the status of an unknown alias."""
    rows = np.load(rows_path)
    client = triton.InferenceServerClient(url=url)
    metadata = client.get_model_metadata(model, model_version=version, as_json=True)
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer(model, [tensor], model_version=version)
    try:
        client.infer(model, [tensor], model_version="no-such-alias")
        missing = "no error"
    except InferenceServerException as error:
        missing = str(error.status())
    print(
        json.dumps(
            {
                "ready": client.is_model_ready(model, model_version=version),
                "inputs": metadata["inputs"],
                "answered_by": result.get_response().model_version,
                "labels": result.as_numpy("label").tolist(),
                "unknown_alias_status": missing,
            }
        )
    )


def cascade(url: str, model: str, rows_path: str) -> None:
    """A cascade served by name: its metadata, labels and answered_by per row."""
    rows = np.load(rows_path)
    client = triton.InferenceServerClient(url=url)
    metadata = client.get_model_metadata(model, as_json=True)
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    wanted = [triton.InferRequestedOutput("label"), triton.InferRequestedOutput("answered_by")]
    result = client.infer(model, [tensor], outputs=wanted)
    answered = [v.decode() for v in result.as_numpy("answered_by").reshape(-1)]
    print(
        json.dumps(
            {
                "model_ready": client.is_model_ready(model),
                "outputs": [spec["name"] for spec in metadata["outputs"]],
                "labels": result.as_numpy("label").tolist(),
                "answered_by": answered,
            }
        )
    )


def main() -> None:
    if sys.argv[1] == "--version":
        versioned(*sys.argv[2:6])
        return
    if sys.argv[1] == "--cascade":
        cascade(*sys.argv[2:5])
        return
    if sys.argv[1] == "--columns":
        columns(*sys.argv[2:4])
        return
    if sys.argv[1] == "--images":
        images(*sys.argv[2:5])
        return
    url, model, rows_path = sys.argv[1:4]
    rows = np.load(rows_path)
    client = triton.InferenceServerClient(url=url)
    metadata = client.get_model_metadata(model, as_json=True)
    config = client.get_model_config(model, as_json=True)["config"]
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer(model, [tensor], outputs=[triton.InferRequestedOutput("label")])
    try:
        client.infer("no-such-model", [tensor])
        missing = "no error"
    except InferenceServerException as error:
        missing = str(error.status())
    print(
        json.dumps(
            {
                "live": client.is_server_live(),
                "ready": client.is_server_ready(),
                "model_ready": client.is_model_ready(model),
                "inputs": metadata["inputs"],
                "max_batch_size": config.get("max_batch_size", 0),
                "labels": result.as_numpy("label").tolist(),
                "missing_model_status": missing,
            }
        )
    )


if __name__ == "__main__":
    main()

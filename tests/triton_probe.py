"""Run as a subprocess: talks to a Paradigm server with tritonclient, unchanged.

tritonclient's generated `inference` protobufs and ours cannot share one process (same
symbols in protobuf's pool), so the test runs this script and reads its JSON answer.
Usage: python -m tests.triton_probe HOST:PORT MODEL ROWS.npy
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException


def main() -> None:
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

"""The REST side of the closed-loop load: OIP v2 over HTTP/1.1 keep-alive, JSON or binary.

The client must cost little next to the server it measures (both share the cores), as the
gRPC load's prebuilt protobuf bytes do: each connection sends one request built once up
front, whole, as bytes (request line, headers and body), and reads the answer with asyncio
streams by its Content-Length, parsing nothing of it but the status. A general client
(aiohttp, httpx, tritonclient.http.aio) builds and parses every request and response in
Python, which on a two-core machine would measure the client as much as the server. Only
the very first answer is parsed, to prove the target really answers with tensors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

#: How a REST request carries its tensors: binary tensor data (tritonclient.http's default)
#: or JSON "data" both ways.
PROTOCOLS = ("rest-binary", "rest-json")


@dataclass(frozen=True)
class RestRequest:
    """A whole HTTP request as bytes, and the path it posts to (for messages)."""

    path: str
    wire: bytes


def make_rest_request(
    target: str, model: str, inputs: Mapping[str, np.ndarray], *, binary: bool, version: str = ""
) -> RestRequest:
    """POST .../infer with these arrays: binary tensor data in and out, or JSON both ways."""
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    tensors, blobs = [], []
    for name, array in inputs.items():
        datatype = _DATATYPES[np.dtype(array.dtype).name]
        tensor: dict[str, object] = {"name": name, "datatype": datatype, "shape": array.shape}
        if binary:
            blob = np.ascontiguousarray(array).tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = array.reshape(-1).tolist()
        tensors.append(tensor)
    message: dict[str, object] = {"inputs": tensors}
    if binary:
        message["parameters"] = {"binary_data_output": True}
    header = json.dumps(message).encode()
    body = header + b"".join(blobs)
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {target}",
        f"Content-Type: {'application/octet-stream' if binary else 'application/json'}",
        f"Content-Length: {len(body)}",
    ]
    if binary:
        lines.append(f"Inference-Header-Content-Length: {len(header)}")
    return RestRequest(path, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)


_DATATYPES = {
    "float32": "FP32", "float64": "FP64", "float16": "FP16", "int8": "INT8", "int16": "INT16",
    "int32": "INT32", "int64": "INT64", "uint8": "UINT8", "uint16": "UINT16",
    "uint32": "UINT32", "uint64": "UINT64", "bool": "BOOL",
}  # fmt: skip


class RestError(Exception):
    """A non-200 answer; str() is its status code, like a gRPC code name in the load."""


class RestConnection:
    """One keep-alive connection that sends the same request again and again."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, target: str) -> RestConnection:
        host, _, port = target.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer)

    async def send(self, request: RestRequest) -> tuple[dict[str, str], bytes]:
        """One exchange: the answer's headers (lower-case names) and body; RestError if
        the status is not 200."""
        self._writer.write(request.wire)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await self._reader.readexactly(int(headers.get("content-length", "0")))
        status = status_line.split(" ", 2)[1]
        if status != "200":
            raise RestError(status)
        return headers, body

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


def output_shapes(headers: Mapping[str, str], body: bytes) -> dict[str, list[int]]:
    """name -> shape of the outputs in one answer (its JSON header only)."""
    length = headers.get("inference-header-content-length")
    header = json.loads(body if length is None else body[: int(length)])
    return {output["name"]: list(output["shape"]) for output in header["outputs"]}

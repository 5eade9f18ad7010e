"""A plain HTTP/1.1 client for the REST tests: exact bytes in, status, headers and bytes out."""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        """The protocol's {"error": message}; fails the test if the body is anything else."""
        body = self.json()
        assert isinstance(body, dict) and set(body) == {"error"}, body
        assert isinstance(body["error"], str)
        return body["error"]


def call(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    context: ssl.SSLContext | None = None,
    timeout: float = 60.0,
) -> Answer:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    connection: http.client.HTTPConnection = (
        http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=context)
        if parts.scheme == "https"
        else http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    )
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Answer(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        connection.close()


def post_json(
    url: str,
    path: str,
    message: Any,
    *,
    extra_headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> Answer:
    return call(
        url, "POST", path, json.dumps(message).encode(),
        {"Content-Type": "application/json", **(extra_headers or {})}, **kwargs,
    )  # fmt: skip


def post_binary(url: str, path: str, header: Any, blobs: list[bytes], **kwargs: Any) -> Answer:
    """The binary tensor data extension: JSON header, then the tensors' bytes."""
    head = json.dumps(header).encode()
    return call(
        url, "POST", path, head + b"".join(blobs),
        {"Content-Type": "application/octet-stream",
         "Inference-Header-Content-Length": str(len(head))},
        **kwargs,
    )  # fmt: skip

"""The OIP v2 REST endpoints as a Starlette app over the one data plane.

Each endpoint does what its gRPC method in service/api/inference.py does, through the same
DataPlane calls; failures become the status and message service/api/errors.for_caller
gives gRPC, answered as {"error": message} with the HTTP status of HTTP_STATUS. Tokens are
checked against the scope of the matching gRPC method (service/api/auth.METHOD_SCOPES), so
the two transports cannot drift apart on who may call what.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from service import __version__, tracing
from service.api import auth
from service.api.codec import check_length
from service.api.errors import HTTP_STATUS, for_caller
from service.api.inference import EXTENSIONS, PLATFORM, model_config
from service.api.rest.codec import (
    BINARY_TYPE,
    HEADER_LENGTH,
    JSON_TYPE,
    decode_infer,
    dumps,
    encode_infer,
)
from service.api.traced import traced_http
from service.errors import InvalidArgument, ResourceExhausted
from service.serving.cascade import CascadePlane

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]

_INFERENCE = "/inference.GRPCInferenceService/"
#: The gRPC method whose scope each endpoint shares. Health is the exception: like
#: grpc.health.v1 it needs no token, because probes (Kubernetes, load balancers) carry none.
_METHODS = {
    "live": "/grpc.health.v1.Health/Check",
    "ready": "/grpc.health.v1.Health/Check",
    "server_metadata": _INFERENCE + "ServerMetadata",
    "model_metadata": _INFERENCE + "ModelMetadata",
    "model_ready": _INFERENCE + "ModelReady",
    "model_config": _INFERENCE + "ModelConfig",
    "infer": _INFERENCE + "ModelInfer",
}


@dataclass(frozen=True)
class RestLimits:
    #: Largest request body, as gRPC's max_message_bytes.
    max_body_bytes: int
    #: Requests in progress at once, as gRPC's max_concurrent_rpcs.
    max_in_flight: int
    #: Largest batch a request may carry (ModelConfig's max_batch_size).
    max_batch_size: int


def build_rest_app(
    dataplane: CascadePlane,
    *,
    ready: Callable[[], bool],
    tokens: auth.Tokens | None,
    limits: RestLimits,
) -> Starlette:
    """The ASGI app: OIP v2 health, metadata, readiness and inference."""
    endpoints = _Endpoints(dataplane, ready, limits)
    guard = _Guard(tokens, limits)

    def route(path: str, name: str, methods: tuple[str, ...] = ("GET",)) -> Route:
        handler = guard.wrap(getattr(endpoints, name), name)
        if tracing.ENABLED:  # off, no request pays for it
            handler = traced_http(handler, path)
        return Route(path, handler, methods=list(methods), name=name)

    model = "/v2/models/{model}"
    version = model + "/versions/{version}"
    return Starlette(
        routes=[
            route("/v2/health/live", "live"),
            route("/v2/health/ready", "ready"),
            route("/v2", "server_metadata"),
            route(model, "model_metadata"),
            route(version, "model_metadata"),
            route(model + "/ready", "model_ready"),
            route(version + "/ready", "model_ready"),
            route(model + "/config", "model_config"),
            route(version + "/config", "model_config"),
            route(model + "/infer", "infer", ("POST",)),
            route(version + "/infer", "infer", ("POST",)),
        ],
        exception_handlers={HTTPException: _http_error},  # type: ignore[dict-item]
    )


def error_response(status: int, message: str) -> Response:
    return Response(dumps({"error": message}), status, media_type=JSON_TYPE)


def _json(value: Any, status: int = 200) -> Response:
    return Response(dumps(value), status, media_type=JSON_TYPE)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """Unknown paths and methods answer JSON too, naming what exists."""
    path = request.url.path
    if len(path) > 200:  # echoed, so bounded like every name in a message
        path = path[:200] + "…"
    if exc.status_code == 404:
        message = f"no endpoint {path}; see /v2 and /v2/models/{{model}}"
    elif exc.status_code == 405:
        message = f"{request.method[:16]} is not allowed on {path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message)


class _Guard:
    """Around every endpoint: the in-flight bound, the token check, and one error mapping."""

    def __init__(self, tokens: auth.Tokens | None, limits: RestLimits) -> None:
        self._tokens = tokens
        self._max_in_flight = limits.max_in_flight
        self._in_flight = 0

    def wrap(self, handler: Handler, name: str) -> Handler:
        method = _METHODS[name]
        required = auth.required_scope(method)
        what = f"{name} ({method.lstrip('/')})"

        async def guarded(request: Request) -> Response:
            if self._tokens is not None and required is not None:
                refused = self._refuse(request, required, what)
                if refused is not None:
                    return refused
            if self._in_flight >= self._max_in_flight:
                return _failure(
                    ResourceExhausted(
                        f"{self._in_flight} requests are in progress, the most this server "
                        "takes at once (max_concurrent_rpcs): retry later"
                    ),
                    what,
                )
            self._in_flight += 1
            try:
                return await handler(request)
            except ClientDisconnect:
                # Gone before its body arrived: nobody reads this answer, and it is no bug.
                return error_response(499, "the client closed the connection")
            except Exception as exc:
                return _failure(exc, what)
            finally:
                self._in_flight -= 1

        return guarded

    def _refuse(self, request: Request, required: auth.Scope, what: str) -> Response | None:
        assert self._tokens is not None
        scope, problem = self._tokens.authenticate(request.headers.getlist("authorization"))
        if scope is None:
            log.info("%s refused: %s", what, problem.split(":")[0])
            response = error_response(401, problem.replace("metadata", "header"))
            response.headers["www-authenticate"] = "Bearer"
            return response
        refused = auth.refusal(scope, required, what)
        return None if refused is None else error_response(403, refused)


def _failure(exc: BaseException, what: str) -> Response:
    code, message = for_caller(exc, what)
    status = 413 if isinstance(exc, BodyTooLarge) else HTTP_STATUS.get(code, 500)
    return error_response(status, message)


class _Endpoints:
    def __init__(self, dataplane: CascadePlane, ready: Callable[[], bool], limits: RestLimits):
        self._dataplane = dataplane
        self._ready = ready
        self._max_body_bytes = limits.max_body_bytes
        self._max_batch_size = limits.max_batch_size

    async def live(self, request: Request) -> Response:
        return _json({"live": True})

    async def ready(self, request: Request) -> Response:
        # 503 rather than the protocol's "4xx": what load balancers and Kubernetes read as
        # "not now"; tritonclient reads anything but 200 as not ready.
        ready = self._ready()
        return _json({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        return _json({"name": "paradigm", "version": __version__, "extensions": EXTENSIONS})

    async def model_metadata(self, request: Request) -> Response:
        name, version = _model(request)
        model = await self._dataplane.describe(name, version)
        return _json(
            {
                "name": model.name,
                "versions": model.versions,
                "platform": PLATFORM,
                "inputs": [_spec(spec) for spec in model.inputs],
                "outputs": [_spec(spec) for spec in model.outputs],
                "parameters": model.parameters,
            }
        )

    async def model_ready(self, request: Request) -> Response:
        name, version = _model(request)
        ready = await self._dataplane.ready(name, version)
        return _json({"name": name, "ready": ready}, 200 if ready else 503)

    async def model_config(self, request: Request) -> Response:
        """Triton's model configuration extension, as its HTTP endpoint writes it."""
        name, version = _model(request)
        model = await self._dataplane.describe(name, version)
        config = MessageToDict(
            model_config(model, self._max_batch_size), preserving_proto_field_name=True
        )
        # int64 fields are strings in protobuf's JSON; Triton writes dims as numbers.
        for tensor in (*config.get("input", ()), *config.get("output", ())):
            tensor["dims"] = [int(dim) for dim in tensor.get("dims", ())]
        return _json(config)

    async def infer(self, request: Request) -> Response:
        arrived = time.perf_counter()
        name, version = _model(request)
        if request.headers.get("content-encoding", "identity") != "identity":
            raise InvalidArgument(
                f"Content-Encoding {request.headers['content-encoding'][:32]!r} is not "
                "accepted: send the body uncompressed"
            )
        body = await self._body(request)
        decoded, answer = decode_infer(
            body, request.headers.get(HEADER_LENGTH), name, version, arrived=arrived
        )
        response = await self._dataplane.infer(decoded)
        if tracing.ENABLED and tracing.recording():
            with tracing.span("encode"):
                content, header_length = encode_infer(response, answer)
        else:
            content, header_length = encode_infer(response, answer)
        if header_length is None:
            return Response(content, media_type=JSON_TYPE)
        return Response(
            content,
            media_type=BINARY_TYPE,
            headers={HEADER_LENGTH: str(header_length)},
        )

    async def _body(self, request: Request) -> bytes:
        """The body, refused once it grows past max_body_bytes (gRPC's message limit):
        a client cannot make the server hold more than that."""
        limit = self._max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), limit)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class BodyTooLarge(ResourceExhausted):
    """RESOURCE_EXHAUSTED as gRPC says it, but 413 over HTTP, not 429: the same body will
    never fit, and 429 tells clients to retry."""


def _too_large(size: int, limit: int) -> BodyTooLarge:
    return BodyTooLarge(
        f"the request body is {size} bytes or more, over the limit of {limit} "
        "(max_message_bytes): send fewer rows per request"
    )


def _model(request: Request) -> tuple[str, str]:
    name: str = request.path_params["model"]
    version: str = request.path_params.get("version", "")
    check_length(name, "model name")
    check_length(version, "model version")
    return name, version


def _spec(spec: Any) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": spec.shape}

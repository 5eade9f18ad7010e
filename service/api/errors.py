"""Every failure of every call becomes one status and message for the caller.

ParadigmError subclasses carry their status and a message for the caller. Anything else is
a bug: the trace goes to the log with a request id, the caller gets INTERNAL and that id.
`for_caller` decides this for both transports: gRPC's interceptor below aborts with it, and
REST (service/api/rest) answers the HTTP status of HTTP_STATUS with the same message.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from service.errors import InvalidArgument, ParadigmError, storage_error

log = logging.getLogger(__name__)

#: Longest message sent to a caller: gRPC carries it in a trailer, and one over the
#: metadata limit turns the whole answer into a transport error.
MAX_MESSAGE_CHARS = 1024


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        # A method's handler never changes: wrap it once, not on every call (measured: the
        # per-call rebuild was a visible share of a batch-1 request's server time).
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return handler
            wrapped = self._wrapped[method] = _wrap(handler, method)
        return wrapped


class _Undecodable:
    """Stands in for a request whose bytes are not the message the method takes."""

    def __init__(self, error: InvalidArgument) -> None:
        self.error = error


def _safe_deserializer(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    """A deserializer that never raises: gRPC would answer UNKNOWN with the exception's
    type for the caller to puzzle over; the handler raises INVALID_ARGUMENT instead."""
    if deserialize is None:
        return lambda data: data
    message_type = getattr(getattr(deserialize, "__self__", None), "__name__", "request")

    def safe(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:
            return _Undecodable(
                InvalidArgument(
                    f"the request is not a valid {message_type} protobuf message "
                    f"({len(data)} bytes): check the client's generated code and the method"
                )
            )

    return safe


def _wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    kwargs = {
        "request_deserializer": _safe_deserializer(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(_unary(handler.unary_unary, method), **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _unary(handler.stream_unary, method, streamed=True), **kwargs
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(handler.unary_stream, method), **kwargs
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            _streaming(handler.stream_stream, method, streamed=True), **kwargs
        )
    return handler


def _checked(request: Any, streamed: bool) -> Any:
    if streamed:
        return _checked_stream(request)
    if isinstance(request, _Undecodable):
        raise request.error
    return request


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, _Undecodable):
            raise request.error
        yield request


def _unary(behavior: Callable[..., Any], method: str, streamed: bool = False) -> Callable[..., Any]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(_checked(request, streamed), context)
        except Exception as exc:
            await _abort(context, exc, method)

    return wrapper


def _streaming(
    behavior: Callable[..., Any], method: str, streamed: bool = False
) -> Callable[..., Any]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in behavior(_checked(request, streamed), context):
                yield item
        except Exception as exc:
            await _abort(context, exc, method)

    return wrapper


#: The HTTP status of each gRPC status, for REST answers (docs/api.md has the table).
#: FAILED_PRECONDITION is 400 as in gRPC's own HTTP mapping (google.rpc.Code): the request
#: cannot succeed until the caller or an operator changes something, which is not a 409
#: conflict between concurrent writers.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


def for_caller(exc: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    """The status and message a failed call answers, whatever the transport; a bug is
    logged here with the request id the caller is given."""
    if isinstance(exc, ParadigmError):
        return exc.status, _bounded(exc.message)
    # A full or read-only disk is the operator's to fix, not a bug: say so, not INTERNAL.
    storage = storage_error(exc, "could not write to the data directory")
    if storage is not None:
        return storage.status, storage.message
    request_id = uuid.uuid4().hex[:12]
    log.error("%s failed, request id %s", method, request_id, exc_info=exc)
    return (
        grpc.StatusCode.INTERNAL,
        f"internal error (request id {request_id}; details are in the server log)",
    )


async def _abort(context: grpc.aio.ServicerContext, exc: Exception, method: str) -> None:
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    await context.abort(*for_caller(exc, method))


def _bounded(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 30] + f" … ({len(message)} characters in all)"

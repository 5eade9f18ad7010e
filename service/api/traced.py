"""A server span per gRPC call and per HTTP request, installed only when traces are on.

The span continues the caller's trace (W3C traceparent in gRPC metadata or HTTP headers)
and is current while the handler runs, so the data plane's queue, run and encode spans and
a training job's tree hang under it. Names and attributes follow OpenTelemetry's RPC and
HTTP semantic conventions; only failures that are the server's (as the conventions list
them) mark a span as an error: a caller's bad input is not one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from service import tracing
from service.errors import ParadigmError

#: gRPC codes that are the server's fault (OpenTelemetry's RPC conventions for servers).
SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


#: Services whose calls make no spans.
UNTRACED = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """Innermost interceptor (after ErrorInterceptor): it sees a handler's own exceptions,
    and keeps the handler's (de)serializers for the ErrorInterceptor to wrap."""

    def __init__(self) -> None:
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
            # Health probes come every few seconds from every load balancer: untraced.
            untraced = method.startswith(UNTRACED)
            wrapped = self._wrapped[method] = handler if untraced else _wrap(handler, method)
        return wrapped


def _wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    service, _, name = method.lstrip("/").rpartition("/")
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
    span_name = method.lstrip("/")
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _unary(handler.unary_unary, span_name, attributes), **kwargs
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _unary(handler.stream_unary, span_name, attributes), **kwargs
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(handler.unary_stream, span_name, attributes), **kwargs
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            _streaming(handler.stream_stream, span_name, attributes), **kwargs
        )
    return handler


def _unary(behavior: Callable[..., Any], name: str, attributes: dict[str, Any]) -> Any:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        parent, state = tracing.trace_headers(context.invocation_metadata() or ())
        span = tracing.start_server_span(name, parent, state, attributes)
        if span is None:  # not sampled: no span, nothing current
            return await behavior(request, context)
        token = tracing.activate(span)
        try:
            response = await behavior(request, context)
            span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.OK.value[0])
            return response
        except BaseException as exc:
            _failed(span, exc, context)
            raise
        finally:
            tracing.deactivate(token)
            span.end()

    return wrapper


def _streaming(behavior: Callable[..., Any], name: str, attributes: dict[str, Any]) -> Any:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        parent, state = tracing.trace_headers(context.invocation_metadata() or ())
        span = tracing.start_server_span(name, parent, state, attributes)
        if span is None:
            async for item in behavior(request, context):
                yield item
            return
        token = tracing.activate(span)
        try:
            async for item in behavior(request, context):
                yield item
            span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.OK.value[0])
        except BaseException as exc:
            _failed(span, exc, context)
            raise
        finally:
            tracing.deactivate(token)
            span.end()

    return wrapper


def _failed(span: Any, exc: BaseException, context: grpc.aio.ServicerContext) -> None:
    from opentelemetry.trace import Status, StatusCode

    if isinstance(exc, ParadigmError):
        code = exc.status
    elif isinstance(exc, grpc.aio.AbortError):
        code = context.code() or grpc.StatusCode.UNKNOWN
    elif isinstance(exc, Exception):
        code = grpc.StatusCode.INTERNAL
    else:  # cancelled: the caller went away or its deadline passed
        code = grpc.StatusCode.CANCELLED
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in SERVER_FAULTS:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {exc}"[:200]))


Handler = Callable[[Any], Awaitable[Any]]


def traced_http(handler: Handler, route: str) -> Handler:
    """An HTTP endpoint (a Starlette request -> response) in a server span named after its
    method and route template."""
    from opentelemetry.trace import Status, StatusCode

    async def traced(request: Any) -> Any:
        method = request.method
        headers = request.headers
        span = tracing.start_server_span(
            f"{method} {route}",
            headers.get("traceparent"),
            headers.get("tracestate"),
            {"http.request.method": method, "http.route": route},
        )
        if span is None:
            return await handler(request)
        token = tracing.activate(span)
        try:
            response = await handler(request)
            status = response.status_code
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response
        finally:
            tracing.deactivate(token)
            span.end()

    return traced

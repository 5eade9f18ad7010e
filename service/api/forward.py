"""Control-plane RPCs that a non-owner serving worker passes to the owner, bytes untouched.

With `--workers N` only the owner (slot 0, service/role.py) runs jobs and keeps their
state; the port spreads connections over every worker, so a StartTraining or WatchJob may
arrive anywhere. Each forwarded call is relayed as raw bytes over the owner's private Unix
socket with the caller's metadata (its bearer token included: the owner checks it again)
and remaining deadline, and the owner's status comes back as it was.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import grpc.aio
from google.protobuf.descriptor import ServiceDescriptor

from service import tracing

#: Headers gRPC sets itself on the new call; passing the caller's would duplicate them.
_TRANSPORT_HEADERS = frozenset({"user-agent", "te", "content-type", "grpc-accept-encoding"})


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> list[tuple[str, str | bytes]]:
    metadata = [
        (key, value)
        for key, value in context.invocation_metadata() or ()
        if key not in _TRANSPORT_HEADERS and not key.startswith(":")
    ]
    # The owner's span continues this worker's (itself the caller's child), not the caller's.
    return tracing.inject(metadata) if tracing.ENABLED else metadata


async def _relay_error(context: grpc.aio.ServicerContext[Any, Any], error: grpc.RpcError) -> None:
    code = error.code() if isinstance(error, grpc.aio.AioRpcError) else grpc.StatusCode.UNAVAILABLE
    details = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
    if code == grpc.StatusCode.UNAVAILABLE:
        details = f"the job-owning serving worker is unavailable ({details}); retry shortly"
    await context.abort(code, details or "")


class OwnerForwarder:
    """Generic handlers relaying whole services to the owner's address."""

    def __init__(self, owner_address: str, max_message_bytes: int) -> None:
        self._channel = grpc.aio.insecure_channel(
            owner_address,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )

    async def close(self) -> None:
        await self._channel.close()

    def handlers(self, services: Iterable[ServiceDescriptor]) -> list[grpc.GenericRpcHandler]:
        return [
            grpc.method_handlers_generic_handler(
                service.full_name,
                {
                    method.name: self._handler(
                        f"/{service.full_name}/{method.name}",
                        client_streaming=method.client_streaming,
                        server_streaming=method.server_streaming,
                    )
                    for method in service.methods
                },
            )
            for service in services
        ]

    def _handler(
        self, path: str, *, client_streaming: bool, server_streaming: bool
    ) -> grpc.RpcMethodHandler:
        channel = self._channel
        if client_streaming and server_streaming:
            raise ValueError(f"{path}: bidirectional streams are not forwarded")
        if server_streaming:
            call_stream = channel.unary_stream(path)

            async def unary_stream(
                request: bytes, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[bytes]:
                try:
                    call = call_stream(
                        request, metadata=_metadata(context), timeout=context.time_remaining()
                    )
                    async for response in call:
                        yield response
                except grpc.RpcError as error:
                    await _relay_error(context, error)

            return grpc.unary_stream_rpc_method_handler(unary_stream)
        if client_streaming:
            call_upload = channel.stream_unary(path)

            async def stream_unary(
                requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
            ) -> bytes:
                try:
                    return await call_upload(
                        requests, metadata=_metadata(context), timeout=context.time_remaining()
                    )
                except grpc.RpcError as error:
                    await _relay_error(context, error)
                    raise  # not reached: abort raises

            return grpc.stream_unary_rpc_method_handler(stream_unary)
        call_unary = channel.unary_unary(path)

        async def unary_unary(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            try:
                return await call_unary(
                    request, metadata=_metadata(context), timeout=context.time_remaining()
                )
            except grpc.RpcError as error:
                await _relay_error(context, error)
                raise  # not reached: abort raises

        return grpc.unary_unary_rpc_method_handler(unary_unary)

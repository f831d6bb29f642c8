"""A byte-level gRPC forwarder: one public address in front of the separate service processes.

Requests and responses pass through undecoded; status codes, messages and trailing metadata
(where google.rpc details travel) are passed back unchanged, and server-streaming calls stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TypeAlias

import grpc
from google.protobuf import descriptor_pool

from libs.grpcx.channel import open_channel

__all__ = ["Forwarder"]

# Set by gRPC itself or re-created by the client interceptor for the next hop.
DEFAULT_DEADLINE = 60.0
_DROP = {"user-agent", "content-type", "te", "traceparent", "tracestate", "baggage"}

# Requests and responses stay serialized: the forwarder never decodes a message.
Context: TypeAlias = grpc.aio.ServicerContext[bytes, bytes]
UnaryHandler: TypeAlias = Callable[[bytes, Context], Awaitable[bytes]]
StreamHandler: TypeAlias = Callable[[bytes, Context], AsyncIterator[bytes]]


def _forwardable(metadata: grpc.aio.Metadata | None) -> list[tuple[str, str | bytes]]:
    return [
        (key, value)
        for key, value in metadata or ()
        if key not in _DROP and not key.startswith((":", "grpc-"))
    ]


class Forwarder(grpc.GenericRpcHandler):
    def __init__(self, routes: Mapping[str, str]) -> None:
        self._channels = {service: open_channel(target) for service, target in routes.items()}
        self._pool = descriptor_pool.Default()
        self._handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        # gRPC asks on every call: the handler (multicallable and closure) is built once per
        # method. Only methods of the routed services are remembered, so the cache is bounded by
        # the descriptors, not by what callers send.
        path = handler_call_details.method  # "/package.Service/Method"
        handler = self._handlers.get(path)
        if handler is None:
            handler = self._handler(path)
            if handler is not None:
                self._handlers[path] = handler
        return handler

    def _handler(self, path: str) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        service, _, method = path.lstrip("/").partition("/")
        channel = self._channels.get(service)
        if channel is None:
            return None
        try:
            descriptor = self._pool.FindServiceByName(service).FindMethodByName(method)
        except KeyError:
            return None
        if descriptor is None or descriptor.client_streaming:
            return None
        if descriptor.server_streaming:
            return grpc.unary_stream_rpc_method_handler(self._unary_stream(channel, path))
        return grpc.unary_unary_rpc_method_handler(self._unary_unary(channel, path))

    @staticmethod
    def _unary_unary(channel: grpc.aio.Channel, path: str) -> UnaryHandler:
        multicallable: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(path)

        async def forward(request: bytes, context: Context) -> bytes:
            # wait_for_ready rides out a backend restart (rolling deploy) within the deadline
            # instead of failing the caller at once.
            call = multicallable(
                request,
                metadata=_forwardable(context.invocation_metadata()),
                timeout=context.time_remaining() or DEFAULT_DEADLINE,
                wait_for_ready=True,
            )
            try:
                response: bytes = await call
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "", tuple(exc.trailing_metadata() or ()))
            return response

        return forward

    @staticmethod
    def _unary_stream(channel: grpc.aio.Channel, path: str) -> StreamHandler:
        multicallable: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(path)

        async def forward(request: bytes, context: Context) -> AsyncIterator[bytes]:
            call = multicallable(
                request,
                metadata=_forwardable(context.invocation_metadata()),
                timeout=context.time_remaining(),
            )
            try:
                async for item in call:
                    yield item
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "", tuple(exc.trailing_metadata() or ()))
            finally:
                call.cancel()

        return forward

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

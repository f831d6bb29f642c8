"""Rebuilding a method handler around new behaviour, for the server interceptors: the same kind
of method with the same (de)serializers, so each interceptor states only what it adds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

import grpc

__all__ = ["unary_stream_like", "unary_unary_like", "within_scope"]

Deserializer = Callable[[bytes], Any]


def unary_unary_like(
    handler: Any,
    behaviour: Callable[[Any, Any], Awaitable[Any]],
    *,
    request_deserializer: Deserializer | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    return _like(grpc.unary_unary_rpc_method_handler, handler, behaviour, request_deserializer)


def unary_stream_like(
    handler: Any,
    behaviour: Callable[[Any, Any], AsyncIterator[Any]],
    *,
    request_deserializer: Deserializer | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    return _like(grpc.unary_stream_rpc_method_handler, handler, behaviour, request_deserializer)


def _like(
    make: Callable[..., grpc.RpcMethodHandler[Any, Any]],
    handler: Any,
    behaviour: Any,
    request_deserializer: Deserializer | None,
) -> grpc.RpcMethodHandler[Any, Any]:
    return make(
        behaviour,
        request_deserializer=request_deserializer or handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def within_scope(handler: Any, scope: Callable[[Any], AbstractContextManager[None]]) -> Any:
    """The same handler with each unary or server-streaming call run inside `scope(context)`;
    other kinds are returned as they are."""
    if handler.unary_unary is not None:
        inner_uu: Callable[[Any, Any], Awaitable[Any]] = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            with scope(context):
                return await inner_uu(request, context)

        return unary_unary_like(handler, unary_unary)
    if handler.unary_stream is not None:
        inner_us: Callable[[Any, Any], AsyncIterator[Any]] = handler.unary_stream

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            with scope(context):
                async for item in inner_us(request, context):
                    yield item

        return unary_stream_like(handler, unary_stream)
    return handler

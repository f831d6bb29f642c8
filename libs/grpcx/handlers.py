"""Rebuilding a method handler around new behaviour, for the server interceptors: the same kind
of method with the same (de)serializers, so each interceptor states only what it adds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

__all__ = ["unary_stream_like", "unary_unary_like"]

Deserializer = Callable[[bytes], Any]


def unary_unary_like(
    handler: Any,
    behaviour: Callable[[Any, Any], Awaitable[Any]],
    *,
    request_deserializer: Deserializer | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=request_deserializer or handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def unary_stream_like(
    handler: Any,
    behaviour: Callable[[Any, Any], AsyncIterator[Any]],
    *,
    request_deserializer: Deserializer | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_stream_rpc_method_handler(
        behaviour,
        request_deserializer=request_deserializer or handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )

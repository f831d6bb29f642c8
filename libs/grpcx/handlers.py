"""Rebuilding a method handler around new behaviour, for the server interceptors: the same kind
of method with the same (de)serializers, so each interceptor states only what it adds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc

__all__ = ["PerMethod", "unary_stream_like", "unary_unary_like"]

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
    behaviour: Callable[[Any, Any], AsyncIterator[Any] | Iterator[Any]],
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


class PerMethod:
    """Each method's wrapped handler, built once per handler the lookup returns rather than once per
    call: registered services' lookups return the same handler object every time, so an interceptor
    builds its closures, handler and deserializer once per method. A lookup that returns a new
    handler (a generic handler building one per call) just gets a new wrapping each time.
    Bounded: past `limit` methods (a generic handler answering any path) new ones are not kept."""

    __slots__ = ("_built", "_limit", "_wrap")

    def __init__(self, wrap: Callable[[Any, str], Any], *, limit: int = 512) -> None:
        self._wrap = wrap
        self._limit = limit
        self._built: dict[str, tuple[Any, Any]] = {}

    def get(self, handler: Any, method: str) -> Any:
        built = self._built.get(method)
        if built is not None and built[0] is handler:
            return built[1]
        wrapped = self._wrap(handler, method)
        if built is not None or len(self._built) < self._limit:
            self._built[method] = (handler, wrapped)
        return wrapped

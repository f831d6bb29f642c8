"""rpc.server.duration and rpc.client.duration, by method and status code.

The OpenTelemetry gRPC instrumentation records spans only, so these two interceptors record the
semantic-convention histograms themselves (their _count is the call count). The server one runs
outermost, so it sees the status the caller gets after libs.grpcx.server's call layer has mapped a
domain error.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from libs import metrics
from libs.grpcx.handlers import PerMethod, unary_stream_like, unary_unary_like
from libs.telemetry import current_trace_context

__all__ = [
    "ClientMetricsInterceptor",
    "ServerMetricsInterceptor",
    "attributes_of",
    "rpc_attributes",
    "server_code",
]

# As in libs.grpcx.server (which imports this module): the aio server keeps coroutine functions in
# the sync stubs' handler slots, so handlers are held as Any.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"


def rpc_attributes(path: str, code: grpc.StatusCode) -> dict[str, str | int]:
    service, _, method = path.lstrip("/").partition("/")
    return {
        "rpc.system": "grpc",
        "rpc.service": service,
        "rpc.method": method,
        "rpc.grpc.status_code": code.value[0],
    }


# One dict per (method, code) for the life of the process instead of one per call; the SDK only
# reads it. Bounded by methods and codes; the cap only guards against a generic handler's paths.
attributes_of = functools.lru_cache(maxsize=2048)(rpc_attributes)


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def server_code(context: Any, exc: BaseException | None) -> grpc.StatusCode:
    """The status a server call ended with (grpc.aio or the thread server), for its metrics."""
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # grpc.aio returns the raw number for codes set by abort()
        return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    return grpc.StatusCode.OK if exc is None else grpc.StatusCode.UNKNOWN


def _record(path: str, started: float, context: Any, exc: BaseException | None) -> None:
    metrics.rpc_server_duration.record(_elapsed_ms(started), attributes_of(path, server_code(context, exc)))


def _measured(handler: Any, path: str) -> Any:
    if handler.unary_unary is not None:
        inner_uu: Callable[[Any, Any], Awaitable[Any]] = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            try:
                response = await inner_uu(request, context)
            except BaseException as exc:
                _record(path, started, context, exc)
                raise
            _record(path, started, context, None)
            return response

        return unary_unary_like(handler, unary_unary)
    if handler.unary_stream is not None:
        inner_us: Callable[[Any, Any], AsyncIterator[Any]] = handler.unary_stream

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                async for item in inner_us(request, context):
                    yield item
            except BaseException as exc:
                _record(path, started, context, exc)
                raise
            _record(path, started, context, None)

        return unary_stream_like(handler, unary_stream)
    # Client-streaming methods (reflection) are not counted.
    return handler


class ServerMetricsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        # The load shedder inside builds a handler per admitted call, so this mostly wraps anew;
        # its refusals and the never-shed methods (health) reuse one handler each.
        self._handlers = PerMethod(_measured)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler: Any = await continuation(handler_call_details)
        if handler is None:
            return None
        return self._handlers.get(handler, handler_call_details.method)  # type: ignore[no-any-return]  # see Handler


class ClientMetricsInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Unary calls only: Postwire's service-to-service calls are all unary (the edge's streaming
    forwards are counted by the server that answers them).

    Without an exporter it also puts `metadata` (the internal token) and the current trace ids
    on each call, doing in one interceptor what would otherwise take three (grpc.aio runs each
    as its own coroutine layer around the call)."""

    def __init__(self, *, metadata: tuple[tuple[str, str], ...] = (), trace_ids: bool = False) -> None:
        self._metadata = metadata
        self._replaced = {key for key, _ in metadata} | ({"traceparent"} if trace_ids else set())
        self._trace_ids = trace_ids

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        added = list(self._metadata)
        if self._trace_ids and (traceparent := current_trace_context()):
            added.append(("traceparent", traceparent))
        metadata = grpc.aio.Metadata(
            *[(k, v) for k, v in (details.metadata or ()) if k not in self._replaced], *added
        )
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        started = time.perf_counter()
        # Typed str, but grpc hands the interceptor bytes.
        method: Any = client_call_details.method
        path = method.decode() if isinstance(method, bytes) else str(method)
        if self._replaced:
            client_call_details = self._details(client_call_details)
        try:
            call = await continuation(client_call_details, request)
            code = await call.code()
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            metrics.rpc_client_duration.record(_elapsed_ms(started), attributes_of(path, code))
            raise
        except asyncio.CancelledError:
            metrics.rpc_client_duration.record(
                _elapsed_ms(started), attributes_of(path, grpc.StatusCode.CANCELLED)
            )
            raise
        metrics.rpc_client_duration.record(_elapsed_ms(started), attributes_of(path, code))
        return call

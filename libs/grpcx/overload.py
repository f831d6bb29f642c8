"""Load shedding for every gRPC server: a call that cannot start within a short bound is refused
with RESOURCE_EXHAUSTED, RetryInfo, and an ErrorInfo/QuotaFailure that say "server overloaded".

The reason is distinct from a tenant's rate limit (QuotaFailure subject `tenant:…`): here the
subject is `server:<service>` and ErrorInfo.reason is SERVER_OVERLOADED, so a client can tell
"slow down, you personally" from "this replica is full, retry (perhaps elsewhere)".

grpc.aio's own `maximum_concurrent_rpcs` is not used: it refuses health checks too (a full
server would then look dead to its probes and be restarted under load) and answers without
RetryInfo.

Health and reflection are never shed. A server-streaming call (StreamEvents) is admitted against
the limit like any other call but does not hold a slot while it streams: a few long-lived
subscribers must not use up the capacity meant for unary calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from libs.grpcx.handlers import unary_stream_like, unary_unary_like
from libs.grpcx.in_flight import InFlightLimit

__all__ = ["OVERLOADED_REASON", "LoadShedInterceptor", "overload_retry_after", "overloaded_status"]

OVERLOADED_REASON = "SERVER_OVERLOADED"
_DOMAIN = "postwire.dev"  # as libs.grpcx.status.ERROR_DOMAIN (that module imports the server side)
_NEVER_SHED = ("/grpc.health.", "/grpc.reflection.")

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"


def overloaded_status(service: str, retry_after: float) -> grpc.Status:
    whole = int(retry_after)
    status = status_pb2.Status(
        code=code_pb2.RESOURCE_EXHAUSTED,
        message=f"server overloaded: {service} has too many calls in flight; retry after the RetryInfo delay",
    )
    for detail in (
        error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=whole, nanos=int((retry_after - whole) * 1e9))
        ),
        error_details_pb2.ErrorInfo(reason=OVERLOADED_REASON, domain=_DOMAIN, metadata={"service": service}),
        # Carried across an internal hop (libs.grpcx.status.error_from_rpc keeps QuotaFailure).
        error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=f"server:{service}", description="server overloaded: too many calls in flight"
                )
            ]
        ),
    ):
        status.details.add().Pack(detail)
    return rpc_status.to_status(status)


def overload_retry_after(exc: grpc.aio.AioRpcError) -> float | None:
    """The RetryInfo delay when a peer refused `exc` because it was overloaded; None for any other
    failure (a tenant's rate limit included). Callers treat it like a dependency that is down:
    retry later, and never count it against the message."""
    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    try:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]  # the stubs want the sync grpc.Call; an aio error has the same trailers
    except ValueError:
        return None
    overloaded, delay = False, 0.25
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            overloaded = overloaded or info.reason == OVERLOADED_REASON
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.ToTimedelta().total_seconds()
    return delay if overloaded else None


class LoadShedInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, limit: InFlightLimit, *, service: str, retry_after: float = 0.25) -> None:
        self.limit = limit
        self._refusal = overloaded_status(service, retry_after)
        self._refusal_handler: Handler = grpc.unary_unary_rpc_method_handler(self._refuse_call)

    async def _refuse_call(self, request: bytes, context: Any) -> bytes:
        await self._refuse(context)
        raise AssertionError("unreachable: abort raises")

    async def _refuse(self, context: Any) -> None:
        status = self._refusal
        await context.abort(status.code, status.details, status.trailing_metadata)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        limit = self.limit
        never_shed = handler_call_details.method.startswith(_NEVER_SHED)
        if limit.full() and not never_shed:
            # Refused before the interceptors below and the handler lookup run: when the server
            # is past capacity, the refusal itself must be the cheapest thing it does. (Status
            # only, no message: the same on the wire whatever the method's kind.)
            return self._refusal_handler
        handler: Any = await continuation(handler_call_details)
        if handler is None or never_shed:
            return handler  # type: ignore[no-any-return]  # see Handler
        if handler.unary_unary is not None:
            inner_uu: Callable[[Any, Any], Awaitable[Any]] = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                if not await limit.enter():
                    await self._refuse(context)
                try:
                    return await inner_uu(request, context)
                finally:
                    limit.leave()

            return unary_unary_like(handler, unary_unary)
        if handler.unary_stream is not None:
            inner_us: Callable[[Any, Any], AsyncIterator[Any]] = handler.unary_stream

            async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                if not await limit.enter():
                    await self._refuse(context)
                limit.leave()
                async for item in inner_us(request, context):
                    yield item

            return unary_stream_like(handler, unary_stream)
        return handler  # type: ignore[no-any-return]  # see Handler

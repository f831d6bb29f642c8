"""The server span of each gRPC call.

With an exporter, opentelemetry-instrumentation-grpc's interceptor records it (attributes,
status, the parent from the caller's traceparent). Without one nothing is recorded
(libs.telemetry.sampler_from_env), yet that interceptor still built every call's attribute
dict, parsed the peer, wrapped the servicer context and asked the sampler: all to produce two
ids. `IdsOnlyInterceptor` produces just those: the caller's trace id (from its traceparent) or
a fresh one, a fresh span id, as the current non-recording span, so log lines, INTERNAL
errors, events and NATS headers still carry the trace id, as they did.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from libs.grpcx.handlers import within_scope

__all__ = ["IdsOnlyInterceptor", "parent_ids", "server_tracing_interceptor"]

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"

_ids = RandomIdGenerator()
_NO_STATE = TraceState()


def server_tracing_interceptor(*, recording: bool) -> grpc.aio.ServerInterceptor:
    if recording:
        return aio_server_interceptor()  # type: ignore[no-any-return, no-untyped-call]  # the otel grpc instrumentation is unannotated
    return IdsOnlyInterceptor()


def parent_ids(metadata: Any) -> tuple[int, int, str]:
    """(trace id, trace flags, tracestate) from a W3C traceparent in `metadata`; trace id 0
    when there is none or it is malformed (the caller's call then starts a trace of its own)."""
    parent, state = "", ""
    for key, value in metadata or ():
        if key == "traceparent":
            parent = value
        elif key == "tracestate":
            state = value
    fields = parent.split("-") if isinstance(parent, str) else ()
    if len(fields) < 4 or len(fields[1]) != 32 or len(fields[2]) != 16 or len(fields[3]) != 2:
        return 0, 0, ""
    try:
        return int(fields[1], 16), int(fields[3], 16) & 0xFF, state if isinstance(state, str) else ""
    except ValueError:
        return 0, 0, ""


def _span_for(context: Any) -> NonRecordingSpan:
    trace_id, flags, state = parent_ids(context.invocation_metadata())
    return NonRecordingSpan(
        SpanContext(
            trace_id=trace_id or _ids.generate_trace_id(),
            span_id=_ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=TraceState.from_header([state]) if state else _NO_STATE,
        )
    )


@contextmanager
def _ids_scope(context: Any) -> Iterator[None]:
    token = otel_context.attach(trace.set_span_in_context(_span_for(context)))
    try:
        yield
    finally:
        otel_context.detach(token)


class IdsOnlyInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        found = await continuation(handler_call_details)
        # Reflection's stream (the only other kind) needs no span: within_scope leaves it as is.
        return None if found is None else within_scope(found, _ids_scope)

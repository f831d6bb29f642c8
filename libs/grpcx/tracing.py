"""The server span of each gRPC call.

With an exporter, opentelemetry-instrumentation-grpc's interceptor records it (attributes,
status, the parent from the caller's traceparent). Without one nothing is recorded
(libs.telemetry.sampler_from_env), yet that interceptor still built every call's attribute
dict, parsed the peer, wrapped the servicer context and asked the sampler: all to produce two
ids. `enter_ids` produces just those (libs.grpcx.server's call layer runs it around each call):
the caller's trace id (from its traceparent) or a fresh one, a fresh span id, as the current
non-recording span, so log lines, INTERNAL errors, events and NATS headers still carry the trace
id, as they did.
"""

from __future__ import annotations

from contextvars import Token
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

__all__ = ["enter_ids", "leave_ids", "parent_ids", "recording_interceptor"]

_ids = RandomIdGenerator()
_NO_STATE = TraceState()


def recording_interceptor() -> grpc.aio.ServerInterceptor:
    """With an exporter: OpenTelemetry's interceptor, which records the server span."""
    return aio_server_interceptor()  # type: ignore[no-any-return, no-untyped-call]  # the otel grpc instrumentation is unannotated


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


def enter_ids(context: Any) -> Token[otel_context.Context]:
    """Make the call's ids the current span; the token goes back to `leave_ids` when it ends.
    (Two plain calls rather than a context manager: they run on every call of every server.)"""
    return otel_context.attach(trace.set_span_in_context(_span_for(context)))


def leave_ids(token: Token[otel_context.Context]) -> None:
    otel_context.detach(token)

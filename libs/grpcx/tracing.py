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
from opentelemetry.trace import NonRecordingSpan

from libs.telemetry import parse_traceparent, unrecorded_span

__all__ = ["enter_ids", "leave_ids", "parent_ids", "recording_interceptor"]


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
    return parse_traceparent(parent, state)


def _span_for(context: Any) -> NonRecordingSpan:
    # The caller's flags are kept: this span stands for the caller's own call on this side.
    return unrecorded_span(*parent_ids(context.invocation_metadata()))


def enter_ids(context: Any) -> Token[otel_context.Context]:
    """Make the call's ids the current span; the token goes back to `leave_ids` when it ends.
    (Two plain calls rather than a context manager: they run on every call of every server.)"""
    return otel_context.attach(trace.set_span_in_context(_span_for(context)))


def leave_ids(token: Token[otel_context.Context]) -> None:
    otel_context.detach(token)

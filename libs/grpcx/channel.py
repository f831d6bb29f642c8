"""Client channels to other Postwire services, traced and load-balanced."""

from __future__ import annotations

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from libs.grpcx.call_metrics import ClientMetricsInterceptor
from libs.grpcx.internal_auth import token_client_interceptors, token_metadata
from libs.grpcx.server import MAX_MESSAGE_BYTES
from libs.telemetry import recording

__all__ = ["open_forwarding_channel", "open_internal_channel"]


def open_forwarding_channel(target: str) -> grpc.Channel:
    """A blocking channel for the edge's byte-level forwarding (it runs on grpc's thread server,
    libs.grpcx.threaded_server): no credential of its own (the edge forwards the caller's) and
    no interceptors; the forwarder records rpc.client.duration and passes the trace context.

    `dns:///svc:port` targets spread calls over every replica (round_robin).
    """
    return grpc.insecure_channel(target, options=_OPTIONS)


def open_internal_channel(target: str, *, token: str) -> grpc.aio.Channel:
    """Open a channel for postwire.internal.v1 calls: every call carries the internal token.

    With an exporter, OpenTelemetry's client interceptors record a CLIENT span per call; without
    one, the metrics interceptor also attaches the token and the trace ids to unary calls."""
    if recording():
        traced = [ClientMetricsInterceptor(), *aio_client_interceptors(), *token_client_interceptors(token)]  # type: ignore[no-untyped-call]  # the otel grpc instrumentation is unannotated
        return _open(target, traced)
    otel: list[grpc.aio.ClientInterceptor] = aio_client_interceptors()  # type: ignore[no-untyped-call]  # as above
    streams = [i for i in otel if not isinstance(i, grpc.aio.UnaryUnaryClientInterceptor)]
    fused = ClientMetricsInterceptor(metadata=token_metadata(token), trace_ids=True)
    return _open(target, [fused, *streams, *token_client_interceptors(token, unary_unary=False)])


_OPTIONS = [
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.enable_retries", 1),
    # A restarted peer is back within a second or two; don't let backoff stretch the gap.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def _open(target: str, interceptors: list[grpc.aio.ClientInterceptor]) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=_OPTIONS, interceptors=interceptors or None)

"""Client channels to other Postwire services, traced and load-balanced."""

from __future__ import annotations

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from libs.grpcx.call_metrics import ClientMetricsInterceptor
from libs.grpcx.internal_auth import token_client_interceptors
from libs.grpcx.server import MAX_MESSAGE_BYTES

__all__ = ["open_channel", "open_internal_channel"]


def open_channel(target: str) -> grpc.aio.Channel:
    """Open a channel that adds no credential of its own (the edge forwards the caller's).

    `dns:///svc:port` targets spread calls over every replica (round_robin).
    """
    return _open(target, [])


def open_internal_channel(target: str, *, token: str) -> grpc.aio.Channel:
    """Open a channel for postwire.internal.v1 calls: every call carries the internal token."""
    return _open(target, token_client_interceptors(token))


def _open(target: str, extra: list[grpc.aio.ClientInterceptor]) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.enable_retries", 1),
            # A restarted peer is back within a second or two; don't let backoff stretch the gap.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ],
        interceptors=[ClientMetricsInterceptor(), *aio_client_interceptors(), *extra],  # type: ignore[no-untyped-call]  # the otel grpc instrumentation is unannotated
    )

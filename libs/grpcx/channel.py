"""Client channels to other Postwire services, traced and load-balanced."""

from __future__ import annotations

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from libs.grpcx.call_metrics import ClientMetricsInterceptor
from libs.grpcx.internal_auth import token_client_interceptors
from libs.grpcx.server import MAX_MESSAGE_BYTES

__all__ = ["open_forwarding_channel", "open_internal_channel"]


def open_forwarding_channel(target: str) -> grpc.aio.Channel:
    """A channel for the edge's byte-level forwarding: no credential of its own (the edge
    forwards the caller's) and no interceptors. The forwarder records rpc.client.duration and
    passes the trace context itself; grpc.aio runs any client interceptor in an extra task per
    call, a loop turn the edge cannot spare when it is busy (each new call it accepts waits for
    several turns of that loop).

    `dns:///svc:port` targets spread calls over every replica (round_robin).
    """
    return _open(target, [], traced=False)


def open_internal_channel(target: str, *, token: str) -> grpc.aio.Channel:
    """Open a channel for postwire.internal.v1 calls: every call carries the internal token."""
    return _open(target, token_client_interceptors(token))


def _open(target: str, extra: list[grpc.aio.ClientInterceptor], *, traced: bool = True) -> grpc.aio.Channel:
    interceptors = [ClientMetricsInterceptor(), *aio_client_interceptors(), *extra] if traced else extra  # type: ignore[no-untyped-call]  # the otel grpc instrumentation is unannotated
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
        interceptors=interceptors or None,
    )

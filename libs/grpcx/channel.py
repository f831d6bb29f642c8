"""Client channels to other Postwire services, traced and load-balanced."""

from __future__ import annotations

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from libs.grpcx.server import MAX_MESSAGE_BYTES

__all__ = ["open_channel"]


def open_channel(target: str) -> grpc.aio.Channel:
    """Open a channel; `dns:///svc:port` targets spread calls over every replica (round_robin)."""
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.enable_retries", 1),
        ],
        interceptors=aio_client_interceptors(),
    )

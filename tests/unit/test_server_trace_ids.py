"""Without an exporter, a gRPC server records no span yet every call still runs under trace ids
(libs.grpcx.tracing): the caller's trace id when it sent a traceparent, a fresh one otherwise,
and a span id of its own, as log lines, INTERNAL errors and NATS headers expect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext

from libs.grpcx.channel import open_internal_channel
from libs.grpcx.server import GrpcServer

METHOD = "/postwire.v1.Echo/Ids"
INTERNAL_METHOD = "/postwire.internal.v1.Echo/Ids"
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


class _Ids(grpc.GenericRpcHandler):
    def service(self, details: grpc.HandlerCallDetails) -> Any:
        if details.method not in (METHOD, INTERNAL_METHOD):
            return None

        async def ids(request: bytes, context: Any) -> bytes:
            span = trace.get_current_span()
            ids = span.get_span_context()
            return f"{ids.trace_id:032x}-{ids.span_id:016x}-{int(span.is_recording())}".encode()

        return grpc.unary_unary_rpc_method_handler(ids)


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    srv = GrpcServer("127.0.0.1:0", internal_token="t", service="echo")
    srv.server.add_generic_rpc_handlers([_Ids()])
    await srv.start()
    yield srv
    await srv.stop(0)


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan


async def test_the_callers_trace_id_carries_on_and_each_call_gets_its_own_span_id(
    channel: grpc.aio.Channel,
) -> None:
    call = channel.unary_unary(METHOD)
    parent = (("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"),)
    first = (await call(b"", metadata=parent, timeout=5)).decode().split("-")
    second = (await call(b"", metadata=parent, timeout=5)).decode().split("-")
    assert first[0] == second[0] == CALLER_TRACE
    assert CALLER_SPAN not in (first[1], second[1]) and first[1] != second[1]
    assert first[2] == "0"  # nothing recorded without an exporter


async def test_a_call_without_a_usable_traceparent_starts_a_trace_of_its_own(
    channel: grpc.aio.Channel,
) -> None:
    call = channel.unary_unary(METHOD)
    plain = (await call(b"", timeout=5)).decode().split("-")
    malformed = (await call(b"", metadata=(("traceparent", "00-zz-yy-01"),), timeout=5)).decode().split("-")
    for trace_id, span_id, _ in (plain, malformed):
        assert int(trace_id, 16) != 0 and int(span_id, 16) != 0
    assert plain[0] != malformed[0]


async def test_an_internal_call_carries_the_token_and_the_callers_trace_id(server: GrpcServer) -> None:
    caller = NonRecordingSpan(
        SpanContext(trace_id=int(CALLER_TRACE, 16), span_id=int(CALLER_SPAN, 16), is_remote=False)
    )
    channel = open_internal_channel(f"127.0.0.1:{server.port}", token="t")
    try:
        with trace.use_span(caller):
            answer = await channel.unary_unary(INTERNAL_METHOD)(b"", timeout=5)
    finally:
        await channel.close()
    trace_id, span_id, _ = answer.decode().split("-")
    assert trace_id == CALLER_TRACE and span_id != CALLER_SPAN

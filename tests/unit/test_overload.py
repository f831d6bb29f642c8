"""libs.grpcx.overload through a real in-process GrpcServer: past its limit a call is refused with
RESOURCE_EXHAUSTED + RetryInfo + ErrorInfo(SERVER_OVERLOADED); health is never refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from libs.grpcx.overload import OVERLOADED_REASON
from libs.grpcx.server import GrpcServer

METHOD = "/postwire.v1.Blocker/Block"


class _Blocker(grpc.GenericRpcHandler):
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.both_started = asyncio.Event()
        self.started = 0

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        if details.method != METHOD:
            return None

        async def block(request: bytes, context: Any) -> bytes:
            self.started += 1
            if self.started == 2:
                self.both_started.set()
            await self.release.wait()
            return request

        return grpc.unary_unary_rpc_method_handler(block)


@pytest.fixture
async def server() -> AsyncIterator[tuple[GrpcServer, _Blocker]]:
    srv = GrpcServer("127.0.0.1:0", internal_token="t", service="blocker", max_in_flight=2, max_in_flight_wait=0.0)
    blocker = _Blocker()
    srv.server.add_generic_rpc_handlers([blocker])
    await srv.start()
    yield srv, blocker
    blocker.release.set()
    await srv.stop(0)


def _details(exc: grpc.aio.AioRpcError) -> dict[str, Any]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None
    found: dict[str, Any] = {}
    for any_detail in status.details:
        for kind in (error_details_pb2.RetryInfo, error_details_pb2.ErrorInfo, error_details_pb2.QuotaFailure):
            if any_detail.Is(kind.DESCRIPTOR):
                detail = kind()
                any_detail.Unpack(detail)
                found[kind.__name__] = detail
    return found


async def test_calls_past_the_limit_are_refused_with_retry_info_and_health_still_answers(
    server: tuple[GrpcServer, _Blocker],
) -> None:
    srv, blocker = server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
        call = channel.unary_unary(METHOD)
        held = [asyncio.ensure_future(call(b"x", timeout=10)) for _ in range(2)]
        await asyncio.wait_for(blocker.both_started.wait(), 10)

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(b"y", timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = _details(refused.value)
        assert details["RetryInfo"].retry_delay.ToTimedelta().total_seconds() > 0
        assert details["ErrorInfo"].reason == OVERLOADED_REASON
        assert details["ErrorInfo"].metadata["service"] == "blocker"
        assert details["QuotaFailure"].violations[0].subject == "server:blocker"
        assert blocker.started == 2  # the refused call never reached the handler

        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

        blocker.release.set()
        assert await asyncio.gather(*held) == [b"x", b"x"]
        # Capacity is back once the holders finish.
        assert await call(b"z", timeout=10) == b"z"
        assert srv.in_flight.in_flight == 0

"""The edge's thread server (libs.grpcx.threaded_server), seen by a gRPC client on loopback:
past its call bound a call is refused at once with RetryInfo, a server stream past its own bound
too, health and readiness follow the lifecycle, and an unexpected exception is INTERNAL with a
trace id, never UNKNOWN."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from libs.embedded.ports import free_port
from libs.grpcx.overload import OVERLOADED_REASON
from libs.grpcx.status import retry_delay
from libs.grpcx.threaded_server import Slots, ThreadedGrpcServer
from libs.readiness import READINESS

HOLD = "/test.Hold/Hold"
BOOM = "/test.Hold/Boom"
STREAM = "/test.Hold/Stream"


class _Handlers(grpc.GenericRpcHandler):
    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        if details.method == HOLD:
            return grpc.unary_unary_rpc_method_handler(self._hold)
        if details.method == BOOM:
            return grpc.unary_unary_rpc_method_handler(self._boom)
        if details.method == STREAM:
            return grpc.unary_stream_rpc_method_handler(self._stream)
        return None

    def _hold(self, request: bytes, context: Any) -> bytes:
        self.entered.release()
        self.release.wait(10)
        return b"done"

    def _boom(self, request: bytes, context: Any) -> bytes:
        raise RuntimeError("SELECT secret FROM tenants")  # must not reach the caller

    def _stream(self, request: bytes, context: Any) -> Iterator[bytes]:
        self.entered.release()
        yield b"first"
        self.release.wait(10)


@pytest.fixture
async def served() -> AsyncIterator[tuple[ThreadedGrpcServer, _Handlers, grpc.aio.Channel]]:
    address = f"127.0.0.1:{free_port()}"
    server = ThreadedGrpcServer(address, service="edge", max_in_flight=2, max_streams=1)
    handlers = _Handlers()
    server.server.add_generic_rpc_handlers([handlers])
    await server.start()
    channel = grpc.aio.insecure_channel(address)
    try:
        yield server, handlers, channel
    finally:
        handlers.release.set()
        await channel.close()
        await server.stop(0)


async def _entered(handlers: _Handlers, count: int) -> None:
    for _ in range(count):
        assert await asyncio.to_thread(handlers.entered.acquire, True, 5)


def _overloaded(exc: grpc.aio.AioRpcError) -> bool:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]  # an aio error has the same trailers
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason == OVERLOADED_REASON and info.metadata["service"] == "edge"
    return False


async def test_calls_past_the_bound_are_refused_with_retry_info_and_the_admitted_finish(served) -> None:
    _, handlers, channel = served
    hold = channel.unary_unary(HOLD)
    admitted = [asyncio.ensure_future(hold(b"x", timeout=10)) for _ in range(2)]
    await _entered(handlers, 2)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await hold(b"x", timeout=5)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_delay(refused.value) == pytest.approx(0.25)
    assert _overloaded(refused.value)
    handlers.release.set()
    assert await asyncio.gather(*admitted) == [b"done", b"done"]
    # Slots given back: the next call is admitted.
    assert await hold(b"x", timeout=5) == b"done"


async def test_a_stream_past_its_bound_is_refused(served) -> None:
    _, _, channel = served
    stream = channel.unary_stream(STREAM)
    first = stream(b"x", timeout=10)
    assert await first.read() == b"first"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stream(b"x", timeout=5).read()
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_delay(refused.value) is not None
    first.cancel()


async def test_an_unexpected_exception_is_internal_with_a_trace_id_and_no_text_of_it(served) -> None:
    _, _, channel = served
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await channel.unary_unary(BOOM)(b"x", timeout=5)
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (failed.value.details() or "")
    status = rpc_status.from_call(failed.value)  # type: ignore[arg-type]
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)] if status else []
    assert infos, "INTERNAL carries the trace id in an ErrorInfo"


async def test_health_follows_readiness_and_shutdown(served) -> None:
    server, _, channel = served
    check = health_pb2_grpc.HealthStub(channel).Check
    serving = health_pb2.HealthCheckResponse.SERVING
    assert (await check(health_pb2.HealthCheckRequest(service=""), timeout=5)).status == serving
    assert (await check(health_pb2.HealthCheckRequest(service=READINESS), timeout=5)).status != serving
    await server.set_ready(True)
    assert (await check(health_pb2.HealthCheckRequest(service=READINESS), timeout=5)).status == serving
    await server.enter_graceful_shutdown()
    assert (await check(health_pb2.HealthCheckRequest(service=READINESS), timeout=5)).status != serving
    await server.set_ready(True)  # a late readiness check does not undo the shutdown
    assert (await check(health_pb2.HealthCheckRequest(service=READINESS), timeout=5)).status != serving


def test_slots_bound_holders_across_threads() -> None:
    slots = Slots(3)
    entered = []
    threads = [threading.Thread(target=lambda: entered.append(slots.enter())) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert entered.count(True) == 3 and slots.full()
    slots.leave()
    assert not slots.full() and slots.enter()


async def test_health_refuses_undecodable_bytes_naming_the_message(served) -> None:
    _, _, channel = served
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await channel.unary_unary("/grpc.health.v1.Health/Check")(b"\xff\xff\xff", timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "grpc.health.v1.HealthCheckRequest" in (refused.value.details() or "")
    # The same channel still answers.
    answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING

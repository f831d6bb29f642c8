"""The API key cache in front of the policy service: one Authenticate round trip for a burst of
calls with a new key, none on a call's path while the key stays in use, revocations still seen.

A real grpc.aio policy server on a loopback port counts the calls it answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from postwire.internal.v1 import policy_service_pb2, policy_service_pb2_grpc

from libs.errors import Unauthenticated
from libs.grpcx.auth import KeyResolver


class CountingPolicy(policy_service_pb2_grpc.PolicyServiceServicer):
    def __init__(self) -> None:
        self.calls = 0
        self.revoked = False
        self.delay = 0.05
        self.second_call = asyncio.Event()

    async def Authenticate(
        self, request: policy_service_pb2.AuthenticateRequest, context: Any
    ) -> policy_service_pb2.AuthenticateResponse:
        self.calls += 1
        if self.calls >= 2:
            self.second_call.set()
        await asyncio.sleep(self.delay)
        if self.revoked:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked API key")
        return policy_service_pb2.AuthenticateResponse(tenant_id="t-1", scopes=["send"], key_prefix="pw_ab")


class Metadata:
    """The part of a servicer context the resolver reads."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", "Bearer pw_abcdef"),)


@pytest.fixture
async def policy() -> AsyncIterator[tuple[CountingPolicy, grpc.aio.Channel]]:
    servicer = CountingPolicy()
    server = grpc.aio.server()
    policy_service_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield servicer, channel
    await channel.close()
    await server.stop(None)


async def test_a_burst_with_a_new_key_makes_one_round_trip(policy: tuple[CountingPolicy, grpc.aio.Channel]) -> None:
    servicer, channel = policy
    keys = KeyResolver(channel, ttl=60)
    callers = await asyncio.gather(*(keys.authorize(Metadata(), "send") for _ in range(64)))  # type: ignore[arg-type]
    assert {c.tenant_id for c in callers} == {"t-1"}
    assert servicer.calls == 1


async def test_a_key_in_use_is_refreshed_off_the_calls_path(policy: tuple[CountingPolicy, grpc.aio.Channel]) -> None:
    servicer, channel = policy
    servicer.delay = 0.0
    # A clock the test steps: with real sleeps, a loaded machine oversleeping the last fifth of a
    # short TTL expired the answer and put the refresh back on the call's path.
    now = [1000.0]
    keys = KeyResolver(channel, ttl=5, clock=lambda: now[0])
    await keys.resolve(Metadata())  # type: ignore[arg-type]
    now[0] += 4.5  # inside the last fifth of the TTL
    servicer.delay = 0.3  # a refresh on the call's path would now hold the call this long
    caller = await asyncio.wait_for(keys.resolve(Metadata()), 0.1)  # type: ignore[arg-type]
    assert caller.tenant_id == "t-1"
    assert servicer.calls == 1
    # The refresh reaches the server in the background.
    await asyncio.wait_for(servicer.second_call.wait(), 5)
    await asyncio.sleep(0.35)  # let it finish before the server stops


async def test_a_revoked_key_is_refused_once_its_answer_expires(
    policy: tuple[CountingPolicy, grpc.aio.Channel],
) -> None:
    servicer, channel = policy
    servicer.delay = 0.0
    keys = KeyResolver(channel, ttl=0.3)
    await keys.resolve(Metadata())  # type: ignore[arg-type]
    servicer.revoked = True
    await asyncio.sleep(0.35)
    with pytest.raises(Unauthenticated):
        await keys.resolve(Metadata())  # type: ignore[arg-type]

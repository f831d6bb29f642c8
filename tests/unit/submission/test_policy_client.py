"""PolicyClient over AdmitMany: calls asked together go out as one request, and each gets back
the admission or the very error (details included) that AdmitMessage would have given it."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from postwire.internal.v1 import policy_service_pb2

from libs.errors import FailedPrecondition, InvalidArgument, PostwireError, RateLimited, Unauthenticated
from services.policy.admit import Admission, Decision, Send
from services.policy.api import PolicyApi
from services.submission.acceptance import AdmissionQuery
from services.submission.policy_client import PolicyClient

REFUSALS: dict[str, PostwireError] = {
    "limited": RateLimited("stream 'x': slow down", retry_after=2.5, subject="stream 'x'", description="slow down"),
    "unverified": FailedPrecondition(
        "from.address: not verified", violations=[("DOMAIN_NOT_VERIFIED", "from.address", "verify it")]
    ),
    "badname": InvalidArgument([("stream", "a stream name")]),
    "unknown": Unauthenticated("unknown or revoked API key"),
}


class _Admit:
    """policy's Admit use case: refuses the tenants named in REFUSALS, suppresses 'no@…'."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, send: Send) -> Admission:
        if send.tenant_id in REFUSALS:
            raise REFUSALS[send.tenant_id]
        return Admission(
            sandbox=send.tenant_id == "sandboxed",
            decisions=tuple(Decision.SUPPRESS if r.startswith("no@") else Decision.ADMIT for r in send.recipients),
        )


class _Stub:
    """The policy stub, answering through the real PolicyApi servicer."""

    def __init__(self) -> None:
        self.api = PolicyApi(None, _Admit(), None)  # type: ignore[arg-type]  # only admission is called
        self.many_calls: list[int] = []
        self.unimplemented = False

    async def AdmitMany(self, request: policy_service_pb2.AdmitManyRequest, **_: Any) -> Any:
        if self.unimplemented:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNIMPLEMENTED, grpc.aio.Metadata(), grpc.aio.Metadata())
        self.many_calls.append(len(request.messages))
        wire = policy_service_pb2.AdmitManyRequest.FromString(request.SerializeToString())
        answer = await self.api.AdmitMany(wire, None)  # type: ignore[arg-type]
        return policy_service_pb2.AdmitManyResponse.FromString(answer.SerializeToString())

    async def AdmitMessage(self, request: policy_service_pb2.AdmitMessageRequest, **_: Any) -> Any:
        return await self.api.AdmitMessage(request, None)  # type: ignore[arg-type]


def _query(tenant_id: str, *recipients: str) -> AdmissionQuery:
    return AdmissionQuery(
        tenant_id=tenant_id, stream="transactional", recipients=recipients, unsubscribe_group="", from_domain="a.example"
    )


async def _outcomes(client: PolicyClient, queries: list[AdmissionQuery]) -> list[Any]:
    return list(await asyncio.gather(*(client.admit(q) for q in queries), return_exceptions=True))


async def test_calls_asked_together_share_one_request_and_keep_their_own_answers() -> None:
    stub = _Stub()
    client = PolicyClient(stub)  # type: ignore[arg-type]
    queries = [_query("t1", "a@x", "no@x"), *(_query(t, "b@x") for t in REFUSALS), _query("sandboxed", "c@x")]
    outcomes = await _outcomes(client, queries)
    assert stub.many_calls == [len(queries)]
    assert outcomes[0].suppressed == (False, True) and outcomes[0].sandbox is False
    assert outcomes[-1].suppressed == (False,) and outcomes[-1].sandbox is True
    for (tenant, sent), got in zip(REFUSALS.items(), outcomes[1:-1], strict=True):
        assert type(got) is type(sent), tenant
        assert vars(got) == vars(sent), tenant


async def test_a_policy_without_admit_many_is_asked_one_message_at_a_time() -> None:
    stub = _Stub()
    stub.unimplemented = True
    client = PolicyClient(stub)  # type: ignore[arg-type]
    outcomes = await _outcomes(client, [_query("t1", "a@x"), _query("limited", "b@x")])
    assert outcomes[0].suppressed == (False,)
    assert isinstance(outcomes[1], RateLimited) and outcomes[1].retry_after == pytest.approx(2.5)
    assert stub.many_calls == []

"""The accept use cases' Policy ports over the policy service's AdmitMany and AdmitBatch RPCs.

SendEmail calls that ask at the same time share one AdmitMany round trip (libs.coalesce); each
still gets its own admission or its own error, the same as AdmitMessage would have given it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
from google.rpc import status_pb2
from postwire.internal.v1 import policy_service_pb2, policy_service_pb2_grpc

from libs.coalesce import Coalescer
from libs.errors import PostwireError, Unavailable
from libs.grpcx.status import error_from_rpc
from services.submission.acceptance import Admission, AdmissionQuery

__all__ = ["PolicyClient"]

_TIMEOUT_SECONDS = 5.0
_WHAT = "policy service"


class PolicyClient:
    def __init__(self, stub: policy_service_pb2_grpc.PolicyServiceAsyncStub, *, batch: int = 64) -> None:
        self._stub = stub
        # A policy that is away fails the whole batch at once, not each message again alone.
        self._many: Coalescer[AdmissionQuery, Admission | PostwireError] = Coalescer(
            self._admit_many, max_batch=batch, outage=lambda exc: isinstance(exc, Unavailable)
        )
        # Set when policy answers UNIMPLEMENTED (an older replica during a rolling deploy).
        self._one_by_one = False

    async def admit(self, query: AdmissionQuery) -> Admission:
        # Fail closed: without an answer from policy nothing is admitted.
        answer = await self._many.load(query)
        if isinstance(answer, PostwireError):
            raise answer
        return answer

    async def close(self) -> None:
        await self._many.close()

    async def _admit_many(self, queries: Sequence[AdmissionQuery]) -> list[Admission | PostwireError]:
        if self._one_by_one:
            return list(await asyncio.gather(*(self._admit_one(q) for q in queries)))
        try:
            answer = await self._stub.AdmitMany(
                policy_service_pb2.AdmitManyRequest(messages=[_admit_request(q) for q in queries]),
                timeout=_TIMEOUT_SECONDS,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                self._one_by_one = True
                return await self._admit_many(queries)
            raise error_from_rpc(exc, what=_WHAT) from None
        return [_outcome(result) for result in answer.results]

    async def _admit_one(self, query: AdmissionQuery) -> Admission | PostwireError:
        try:
            answer = await self._stub.AdmitMessage(
                _admit_request(query), timeout=_TIMEOUT_SECONDS, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            return error_from_rpc(exc, what=_WHAT)
        return _admission(answer)

    async def admit_batch(self, queries: Sequence[AdmissionQuery]) -> list[Admission]:
        try:
            answer = await self._stub.AdmitBatch(
                policy_service_pb2.AdmitBatchRequest(
                    tenant_id=queries[0].tenant_id, messages=[_admit_request(q) for q in queries]
                ),
                timeout=_TIMEOUT_SECONDS,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, what=_WHAT) from None
        return [_admission(result) for result in answer.results]


def _admit_request(query: AdmissionQuery) -> policy_service_pb2.AdmitMessageRequest:
    return policy_service_pb2.AdmitMessageRequest(
        tenant_id=query.tenant_id,
        stream=query.stream,
        recipients=query.recipients,
        unsubscribe_group=query.unsubscribe_group,
        from_domain=query.from_domain,
    )


def _admission(answer: policy_service_pb2.AdmitMessageResponse) -> Admission:
    return Admission(
        suppressed=tuple(d == policy_service_pb2.DECISION_SUPPRESS for d in answer.decisions),
        sandbox=answer.sandbox,
    )


def _outcome(result: policy_service_pb2.AdmitManyResult) -> Admission | PostwireError:
    if result.HasField("admission"):
        return _admission(result.admission)
    status = status_pb2.Status.FromString(result.error)
    code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
    # Read back through the one translation every policy error takes, as if AdmitMessage had
    # failed with this status.
    failed = grpc.aio.AioRpcError(
        code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("grpc-status-details-bin", result.error)),
        details=status.message,
    )
    return error_from_rpc(failed, what=_WHAT)

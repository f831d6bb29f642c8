"""The accept use cases' Policy ports over the policy service's AdmitMessage and AdmitBatch RPCs."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from postwire.internal.v1 import policy_service_pb2, policy_service_pb2_grpc

from libs.grpcx.status import error_from_rpc
from services.submission.acceptance import Admission, AdmissionQuery

__all__ = ["PolicyClient"]

_TIMEOUT_SECONDS = 5.0


class PolicyClient:
    def __init__(self, stub: policy_service_pb2_grpc.PolicyServiceAsyncStub) -> None:
        self._stub = stub

    async def admit(self, query: AdmissionQuery) -> Admission:
        try:
            answer = await self._stub.AdmitMessage(
                _admit_request(query), timeout=_TIMEOUT_SECONDS, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            # Fail closed: without an answer from policy nothing is admitted.
            raise error_from_rpc(exc, what="policy service") from None
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
            raise error_from_rpc(exc, what="policy service") from None
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

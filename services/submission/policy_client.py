"""The accept use case's Policy port over the policy service's AdmitMessage RPC."""

from __future__ import annotations

import grpc
from postwire.internal.v1 import policy_service_pb2, policy_service_pb2_grpc

from libs.grpcx.status import error_from_rpc
from services.submission.accept import Admission, AdmissionQuery

__all__ = ["PolicyClient"]

_TIMEOUT_SECONDS = 5.0


class PolicyClient:
    def __init__(self, stub: policy_service_pb2_grpc.PolicyServiceAsyncStub) -> None:
        self._stub = stub

    async def admit(self, query: AdmissionQuery) -> Admission:
        try:
            answer = await self._stub.AdmitMessage(
                policy_service_pb2.AdmitMessageRequest(
                    tenant_id=query.tenant_id,
                    stream=query.stream,
                    recipients=query.recipients,
                    unsubscribe_group=query.unsubscribe_group,
                    from_domain=query.from_domain,
                ),
                timeout=_TIMEOUT_SECONDS,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            # Fail closed: without an answer from policy nothing is admitted.
            raise error_from_rpc(exc, what="policy service") from None
        return Admission(
            suppressed=tuple(d == policy_service_pb2.DECISION_SUPPRESS for d in answer.decisions),
            sandbox=answer.sandbox,
        )

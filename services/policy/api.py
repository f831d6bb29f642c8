"""postwire.internal.v1.PolicyService: authentication and admission for the other services."""

from __future__ import annotations

from postwire.internal.v1 import policy_service_pb2, policy_service_pb2_grpc

from libs.grpcx.auth import Context, tag_span
from services.policy.admit import Admission, Admit, Send
from services.policy.authenticate import Authenticator
from services.policy.manage_suppressions import ManageSuppressions
from services.policy.suppression_protos import entry_inputs


class PolicyApi(policy_service_pb2_grpc.PolicyServiceServicer):
    def __init__(self, authenticator: Authenticator, admit: Admit, suppressions: ManageSuppressions) -> None:
        self._authenticator = authenticator
        self._admit = admit
        self._suppressions = suppressions

    async def Authenticate(
        self, request: policy_service_pb2.AuthenticateRequest, context: Context
    ) -> policy_service_pb2.AuthenticateResponse:
        # Not cached here: every caller (KeyResolver) already caches, and stacking two caches
        # would double how late a revocation takes effect.
        record = await self._authenticator.key(request.api_key, cached=False)
        tag_span(record.tenant_id, record.prefix)
        return policy_service_pb2.AuthenticateResponse(
            tenant_id=record.tenant_id, scopes=record.scopes, key_prefix=record.prefix
        )

    async def AdmitMessage(
        self, request: policy_service_pb2.AdmitMessageRequest, context: Context
    ) -> policy_service_pb2.AdmitMessageResponse:
        admission = await self._admit(_send(request.tenant_id, request))
        return _admission_response(admission)

    async def AdmitBatch(
        self, request: policy_service_pb2.AdmitBatchRequest, context: Context
    ) -> policy_service_pb2.AdmitBatchResponse:
        admissions = await self._admit.batch(request.tenant_id, [_send(request.tenant_id, m) for m in request.messages])
        return policy_service_pb2.AdmitBatchResponse(results=[_admission_response(a) for a in admissions])

    async def RecordSuppressions(
        self, request: policy_service_pb2.RecordSuppressionsRequest, context: Context
    ) -> policy_service_pb2.RecordSuppressionsResponse:
        await self._suppressions.record(request.tenant_id, entry_inputs(request.suppressions))
        return policy_service_pb2.RecordSuppressionsResponse()


def _send(tenant_id: str, request: policy_service_pb2.AdmitMessageRequest) -> Send:
    return Send(
        tenant_id=tenant_id,
        from_domain=request.from_domain,
        stream=request.stream,
        unsubscribe_group=request.unsubscribe_group,
        recipients=tuple(request.recipients),
    )


def _admission_response(admission: Admission) -> policy_service_pb2.AdmitMessageResponse:
    return policy_service_pb2.AdmitMessageResponse(
        sandbox=admission.sandbox,
        decisions=[policy_service_pb2.Decision.ValueType(d) for d in admission.decisions],
    )

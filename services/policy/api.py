"""postwire.internal.v1.PolicyService: authentication and admission for the other services."""

from __future__ import annotations

from google.rpc import status_pb2
from postwire.internal.v1 import policy_service_pb2, policy_service_pb2_grpc

from libs.errors import InvalidArgument
from libs.grpcx.auth import Context, tag_span
from libs.grpcx.status import status_for
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

    async def AdmitMany(
        self, request: policy_service_pb2.AdmitManyRequest, context: Context
    ) -> policy_service_pb2.AdmitManyResponse:
        if len(request.messages) > MAX_ADMIT_MANY:
            raise InvalidArgument([("messages", f"at most {MAX_ADMIT_MANY} messages per call")])
        # Each with its own outcome, as separate AdmitMessage calls would give it.
        outcomes = await self._admit.many([_send(m.tenant_id, m) for m in request.messages])
        return policy_service_pb2.AdmitManyResponse(results=[_result(o) for o in outcomes])

    async def RecordSuppressions(
        self, request: policy_service_pb2.RecordSuppressionsRequest, context: Context
    ) -> policy_service_pb2.RecordSuppressionsResponse:
        await self._suppressions.record(request.tenant_id, entry_inputs(request.suppressions))
        return policy_service_pb2.RecordSuppressionsResponse()


MAX_ADMIT_MANY = 1000


def _result(outcome: Admission | Exception) -> policy_service_pb2.AdmitManyResult:
    if isinstance(outcome, Admission):
        return policy_service_pb2.AdmitManyResult(admission=_admission_response(outcome))
    # The status AdmitMessage would have answered, details included (status_for logs a bug).
    status = status_for(outcome)
    details = dict(status.trailing_metadata or ()).get("grpc-status-details-bin")
    error = (
        status_pb2.Status.FromString(details)
        if isinstance(details, bytes)
        else status_pb2.Status(code=status.code.value[0], message=status.details or "")
    )
    return policy_service_pb2.AdmitManyResult(error=error.SerializeToString())


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

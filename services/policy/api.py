"""postwire.internal.v1.PolicyService: authentication and admission for the other services."""

from __future__ import annotations

import grpc
from postwire.internal.v1 import policy_service_pb2, policy_service_pb2_grpc

from libs.errors import InvalidArgument, RateLimited
from libs.mail.stream_names import name_problem
from services.policy.core import PolicyCore
from services.policy.domain_api import Domains
from services.policy.limits import applicable
from services.policy.suppression_api import entries_from
from services.policy.suppression_lookup import Suppressions


class PolicyApi(policy_service_pb2_grpc.PolicyServiceServicer):
    def __init__(self, core: PolicyCore, suppressions: Suppressions, domains: Domains) -> None:
        self._core = core
        self._suppressions = suppressions
        self._domains = domains

    async def Authenticate(
        self, request: policy_service_pb2.AuthenticateRequest, context: grpc.aio.ServicerContext
    ) -> policy_service_pb2.AuthenticateResponse:
        # Not cached here: every caller (KeyResolver) already caches, and stacking two caches
        # would double how late a revocation takes effect.
        record = await self._core.key(request.api_key, cached=False)
        return policy_service_pb2.AuthenticateResponse(
            tenant_id=record.tenant_id, scopes=record.scopes, key_prefix=record.prefix
        )

    async def AdmitMessage(
        self, request: policy_service_pb2.AdmitMessageRequest, context: grpc.aio.ServicerContext
    ) -> policy_service_pb2.AdmitMessageResponse:
        tenant_id = request.tenant_id
        sandbox = await self._core.sandbox(tenant_id)
        await self._domains.check_from(tenant_id, request.from_domain)
        # Submission checked both already; the same rule again, since any internal caller lands here.
        violations: list[tuple[str, str]] = []
        if problem := name_problem(request.stream):
            violations.append(("stream", problem))
        if request.unsubscribe_group and (problem := name_problem(request.unsubscribe_group)):
            violations.append(("unsubscribe_group", problem))
        if violations:
            raise InvalidArgument(violations)
        suppressed = await self._suppressions.suppressed(tenant_id, request.recipients, request.unsubscribe_group)
        decisions = [
            policy_service_pb2.DECISION_SUPPRESS
            if address in suppressed
            else policy_service_pb2.DECISION_ADMIT
            for address in request.recipients
        ]
        admitted = sum(d == policy_service_pb2.DECISION_ADMIT for d in decisions)
        limits = applicable(await self._core.limits(tenant_id), request.stream)
        if limits and admitted:
            refusal = await self._core.store.consume(tenant_id, limits, admitted)
            if refusal is not None:
                raise RateLimited(
                    f"{refusal.subject}: {refusal.description}",
                    retry_after=refusal.retry_after,
                    subject=refusal.subject,
                    description=refusal.description,
                )
        return policy_service_pb2.AdmitMessageResponse(sandbox=sandbox, decisions=decisions)

    async def RecordSuppressions(
        self, request: policy_service_pb2.RecordSuppressionsRequest, context: grpc.aio.ServicerContext
    ) -> policy_service_pb2.RecordSuppressionsResponse:
        entries = entries_from(request.suppressions, "suppressions")
        await self._suppressions.record(request.tenant_id, entries)
        return policy_service_pb2.RecordSuppressionsResponse()

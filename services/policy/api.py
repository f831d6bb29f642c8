"""postwire.internal.v1.PolicyService: authentication and admission for the other services."""

from __future__ import annotations

import grpc
from postwire.internal.v1 import policy_service_pb2, policy_service_pb2_grpc

from libs.errors import InvalidArgument, PermissionDenied, RateLimited
from libs.mail.stream_names import name_problem
from services.policy.api_keys import DEFAULT_SCOPES, generate_key, hash_key
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
        record = await self._core.key(request.api_key, cached=True)
        if "send" not in record.scopes:
            raise PermissionDenied("this API key lacks the 'send' scope")
        await self._domains.check_from(record.tenant_id, request.from_domain)
        # Submission checked both already; the same rule again, since any internal caller lands here.
        violations: list[tuple[str, str]] = []
        if problem := name_problem(request.stream):
            violations.append(("stream", problem))
        if request.unsubscribe_group and (problem := name_problem(request.unsubscribe_group)):
            violations.append(("unsubscribe_group", problem))
        if violations:
            raise InvalidArgument(violations)
        suppressed = await self._suppressions.suppressed(
            record.tenant_id, request.recipients, request.unsubscribe_group
        )
        decisions = [
            policy_service_pb2.DECISION_SUPPRESS
            if address in suppressed
            else policy_service_pb2.DECISION_ADMIT
            for address in request.recipients
        ]
        admitted = sum(d == policy_service_pb2.DECISION_ADMIT for d in decisions)
        limits = applicable(await self._core.limits(record.tenant_id), request.stream)
        if limits and admitted:
            refusal = await self._core.store.consume(record.tenant_id, limits, admitted)
            if refusal is not None:
                raise RateLimited(
                    f"{refusal.subject}: {refusal.description}",
                    retry_after=refusal.retry_after,
                    subject=refusal.subject,
                    description=refusal.description,
                )
        return policy_service_pb2.AdmitMessageResponse(
            tenant_id=record.tenant_id,
            key_prefix=record.prefix,
            sandbox=record.sandbox,
            decisions=decisions,
        )

    async def CreateTenant(
        self, request: policy_service_pb2.CreateTenantRequest, context: grpc.aio.ServicerContext
    ) -> policy_service_pb2.CreateTenantResponse:
        name = request.name.strip()
        if not name or len(name) > 128:
            raise InvalidArgument([("name", "a tenant name of 1-128 characters is required")])
        new = generate_key()
        tenant_id = await self._core.store.create_tenant(
            name, prefix=new.prefix, key_hash=hash_key(new.key, self._core.pepper), scopes=DEFAULT_SCOPES
        )
        return policy_service_pb2.CreateTenantResponse(tenant_id=tenant_id, api_key=new.key)

    async def RecordSuppressions(
        self, request: policy_service_pb2.RecordSuppressionsRequest, context: grpc.aio.ServicerContext
    ) -> policy_service_pb2.RecordSuppressionsResponse:
        entries = entries_from(request.suppressions, "suppressions")
        await self._suppressions.record(request.tenant_id, entries)
        return policy_service_pb2.RecordSuppressionsResponse()

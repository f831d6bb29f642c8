"""postwire.internal.v1.PolicyService: authentication and admission for the other services."""

from __future__ import annotations

import grpc
from postwire.internal.v1 import policy_service_pb2, policy_service_pb2_grpc

from libs.errors import InvalidArgument, PermissionDenied, RateLimited, Unauthenticated
from libs.ttl_cache import TtlCache
from services.policy.api_keys import DEFAULT_SCOPES, generate_key, hash_key
from services.policy.limits import Limits, applicable
from services.policy.store import KeyRecord, PolicyStore


class PolicyCore:
    """Key and limit lookups with bounded staleness, shared by the internal and admin APIs."""

    def __init__(self, store: PolicyStore, pepper: bytes, *, cache_seconds: float = 5.0) -> None:
        self.store = store
        self.pepper = pepper
        self._keys: TtlCache[KeyRecord] = TtlCache(cache_seconds)
        self._limits: TtlCache[list[Limits]] = TtlCache(cache_seconds)

    async def key(self, api_key: str, *, cached: bool) -> KeyRecord:
        digest = hash_key(api_key, self.pepper) if api_key else b""
        record = self._keys.get(digest) if cached else None
        if record is None and digest:
            record = await self.store.find_key(digest)
            if record is not None:
                self._keys.put(digest, record)
        if record is None:
            # One message for unknown, revoked and malformed keys: no oracle for guessing.
            raise Unauthenticated("unknown or revoked API key")
        return record

    async def limits(self, tenant_id: str) -> list[Limits]:
        found = self._limits.get(tenant_id)
        if found is None:
            found = await self.store.limits(tenant_id)
            self._limits.put(tenant_id, found)
        return found

    def forget_tenant(self, tenant_id: str) -> None:
        """This replica applies a limit change at once; the others within the cache time."""
        self._limits.drop(tenant_id)


class PolicyApi(policy_service_pb2_grpc.PolicyServiceServicer):
    def __init__(self, core: PolicyCore) -> None:
        self._core = core

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
        decisions = [policy_service_pb2.DECISION_ADMIT] * len(request.recipients)
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

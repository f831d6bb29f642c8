"""Key and limit lookups with bounded staleness, shared by the policy service's APIs."""

from __future__ import annotations

import grpc

from libs.errors import Unauthenticated
from libs.grpcx.auth import Caller, bearer_token, tag_span
from libs.ttl_cache import TtlCache
from services.policy.api_keys import hash_key
from services.policy.limits import Limits
from services.policy.store import KeyRecord, PolicyStore

__all__ = ["PolicyCore"]


class PolicyCore:
    """Key and limit lookups with bounded staleness, shared by the internal and admin APIs."""

    def __init__(self, store: PolicyStore, pepper: bytes, *, cache_seconds: float = 5.0) -> None:
        self.store = store
        self.pepper = pepper
        self._keys: TtlCache[KeyRecord] = TtlCache(cache_seconds)
        self._limits: TtlCache[list[Limits]] = TtlCache(cache_seconds)
        self._sandbox: TtlCache[bool] = TtlCache(cache_seconds)

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
        tag_span(record.tenant_id, record.prefix)
        return record

    async def caller(self, context: grpc.aio.ServicerContext, scope: str) -> Caller:
        """The calling tenant key of a public policy-served RPC (suppressions, domains), with `scope`."""
        record = await self.key(bearer_token(context), cached=True)
        caller = Caller(record.tenant_id, frozenset(record.scopes), record.prefix)
        caller.require(scope)
        return caller

    async def limits(self, tenant_id: str) -> list[Limits]:
        found = self._limits.get(tenant_id)
        if found is None:
            found = await self.store.limits(tenant_id)
            self._limits.put(tenant_id, found)
        return found

    async def sandbox(self, tenant_id: str) -> bool:
        """Whether the tenant runs in sandbox mode; an unknown tenant is an unknown key."""
        found = self._sandbox.get(tenant_id)
        if found is None:
            found = await self.store.tenant_sandbox(tenant_id)
            if found is None:
                raise Unauthenticated("unknown or revoked API key")
            self._sandbox.put(tenant_id, found)
        return found

    def forget_tenant(self, tenant_id: str) -> None:
        """This replica applies a tenant change (limits, sandbox) at once; the others within the
        cache time. Keys are cached by digest, not tenant, so all of them go: admin changes are rare."""
        self._limits.drop(tenant_id)
        self._sandbox.drop(tenant_id)
        self._keys.clear()

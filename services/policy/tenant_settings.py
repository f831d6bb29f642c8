"""Tenant settings admission reads on every send (sandbox flag, limits), cached with bounded
staleness: a change made on this replica applies at once, on the others within the cache time."""

from __future__ import annotations

from typing import Protocol

from libs.ttl_cache import TtlCache
from services.policy.limits import Limits

__all__ = ["SettingsStore", "TenantSettings"]


class SettingsStore(Protocol):
    async def tenant_sandbox(self, tenant_id: str) -> bool | None: ...
    async def limits(self, tenant_id: str) -> list[Limits]: ...


class TenantSettings:
    def __init__(self, store: SettingsStore, *, cache_seconds: float) -> None:
        self._store = store
        self._limits: TtlCache[list[Limits]] = TtlCache(cache_seconds)
        self._sandbox: TtlCache[bool] = TtlCache(cache_seconds)

    async def sandbox(self, tenant_id: str) -> bool | None:
        """The tenant's sandbox flag, or None when there is no such tenant (never cached, so a
        new tenant works at once)."""
        found = self._sandbox.get(tenant_id)
        if found is None:
            found = await self._store.tenant_sandbox(tenant_id)
            if found is not None:
                self._sandbox.put(tenant_id, found)
        return found

    async def limits(self, tenant_id: str) -> list[Limits]:
        found = self._limits.get(tenant_id)
        if found is None:
            found = await self._store.limits(tenant_id)
            self._limits.put(tenant_id, found)
        return found

    def forget(self, tenant_id: str) -> None:
        self._limits.drop(tenant_id)
        self._sandbox.drop(tenant_id)

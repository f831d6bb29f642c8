"""Suppression lookups for admission, cached with bounded staleness."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from libs.ttl_cache import TtlCache
from services.policy.suppressions import normalise_address

__all__ = ["Suppressions"]


class SuppressedLookup(Protocol):
    async def suppressed(self, tenant_id: str, addresses: Sequence[str], group: str) -> set[str]: ...


class Suppressions:
    """Lookups for admission, with bounded staleness: a change made on this replica applies at
    once, on other replicas within the cache time."""

    def __init__(self, store: SuppressedLookup, *, cache_seconds: float) -> None:
        self._store = store
        self._cache: TtlCache[bool] = TtlCache(cache_seconds, max_entries=100_000)

    async def suppressed(self, tenant_id: str, addresses: Sequence[str], group: str) -> set[str]:
        normalised = [normalise_address(a) for a in addresses]
        found: set[str] = set()
        misses: list[str] = []
        for address in normalised:
            hit = self._cache.get((tenant_id, group, address))
            if hit is None:
                misses.append(address)
            elif hit:
                found.add(address)
        if misses:
            looked_up = await self._store.suppressed(tenant_id, misses, group)
            for address in misses:
                self._cache.put((tenant_id, group, address), address in looked_up)
            found |= looked_up
        return {a for a, n in zip(addresses, normalised, strict=True) if n in found}

    def changed(self, tenant_id: str, entries: Sequence[tuple[str, str]]) -> None:
        """Forget cached answers for (address, group) pairs that changed. An all-mail entry
        changes the answer for every group, so the cache is dropped wholesale then."""
        for address, group in entries:
            if group:
                self._cache.drop((tenant_id, group, address))
            else:
                self._cache.clear()
                return

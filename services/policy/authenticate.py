"""Authentication: which tenant a presented API key belongs to, and whether it may do a thing.

Both the internal Authenticate RPC and policy's own public services (domains, suppressions)
come here; policy cannot ask itself over gRPC as the other services do (libs.grpcx.auth).
"""

from __future__ import annotations

from typing import Protocol

from libs.errors import PermissionDenied, Unauthenticated
from libs.ttl_cache import TtlCache
from services.policy.api_keys import hash_key
from services.policy.records import KeyRecord

__all__ = ["Authenticator", "KeyStore"]


class KeyStore(Protocol):
    async def find_key(self, key_hash: bytes) -> KeyRecord | None: ...


class Authenticator:
    """Key lookups with bounded staleness: a revoked key works at most `cache_seconds` longer."""

    def __init__(self, store: KeyStore, pepper: bytes, *, cache_seconds: float) -> None:
        self._store = store
        self._pepper = pepper
        self._keys: TtlCache[KeyRecord] = TtlCache(cache_seconds)

    async def key(self, api_key: str, *, cached: bool) -> KeyRecord:
        """The active key `api_key`; UNAUTHENTICATED otherwise."""
        digest = hash_key(api_key, self._pepper) if api_key else b""
        record = self._keys.get(digest) if cached else None
        if record is None and digest:
            record = await self._store.find_key(digest)
            if record is not None:
                self._keys.put(digest, record)
        if record is None:
            # One message for unknown, revoked and malformed keys: no oracle for guessing.
            raise Unauthenticated("unknown or revoked API key")
        return record

    async def authorize(self, api_key: str, scope: str) -> KeyRecord:
        """The opening of a public policy-served RPC: the caller's key, which must have `scope`."""
        record = await self.key(api_key, cached=True)
        if scope not in record.scopes:
            raise PermissionDenied(f"this API key lacks the '{scope}' scope")
        return record

    def forget_all(self) -> None:
        """A cached key carries its tenant's sandbox flag; keys are cached by digest, not tenant,
        so a tenant change drops them all (admin changes are rare)."""
        self._keys.clear()

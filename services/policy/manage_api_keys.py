"""Use cases of AdminService for API keys. A new key's plaintext exists only in the answer to
the create: the store keeps its HMAC, and a remembered answer (for a retried request_id) is
sealed. No I/O of its own: the store, the key maker and the sealer are ports."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from libs.errors import InvalidArgument
from libs.request_ids import RequestId
from services.policy.api_keys import NewKey, generate_key, hash_key, key_prefix, scope_violations
from services.policy.records import KeyRow

__all__ = ["KeyStore", "ManageApiKeys", "Sealer"]

_log = logging.getLogger(__name__)


class KeyStore(Protocol):
    async def create_key(
        self, tenant_id: str, *, prefix: str, key_hash: bytes, scopes: Sequence[str], display_name: str
    ) -> KeyRow: ...
    async def list_keys(
        self, tenant_id: str, *, show_revoked: bool, after: str, limit: int
    ) -> list[KeyRow]: ...
    async def revoke_key(self, id_or_prefix: str) -> KeyRow: ...
    async def once(
        self,
        rid: RequestId | None,
        create: Callable[[KeyStore], Awaitable[bytes]],
        *,
        seal: Callable[[bytes], bytes],
        unseal: Callable[[bytes], bytes],
    ) -> bytes: ...


class Sealer(Protocol):
    """Authenticated encryption bound to `associated` (libs.domain_keys.Sealer)."""

    def seal(self, plaintext: bytes, associated: str, /) -> bytes: ...
    def open(self, sealed: bytes, associated: str, /) -> bytes: ...


class ManageApiKeys:
    def __init__(
        self,
        store: KeyStore,
        sealer: Sealer,
        pepper: bytes,
        *,
        new_key: Callable[[], NewKey] = generate_key,
    ) -> None:
        self._store = store
        self._sealer = sealer
        self._pepper = pepper
        self._new_key = new_key

    async def create(
        self,
        tenant_id: str,
        scopes: Sequence[str],
        display_name: str,
        rid: RequestId | None,
        answer: Callable[[KeyRow, str], bytes],
    ) -> bytes:
        """The serialized answer (`answer` of the key row and its plaintext), or the first answer
        for `rid`; only the key's HMAC is stored with it."""
        violations = scope_violations(list(scopes))
        if not tenant_id:
            violations.append(("tenant_id", "a tenant id is required"))
        if len(display_name) > 128:
            violations.append(("display_name", "at most 128 characters"))
        if violations:
            raise InvalidArgument(violations)

        async def create(store: KeyStore) -> bytes:
            new = self._new_key()
            row = await store.create_key(
                tenant_id,
                prefix=new.prefix,
                key_hash=hash_key(new.key, self._pepper),
                scopes=list(scopes),
                display_name=display_name,
            )
            # The prefix names the key in logs; the secret never goes there.
            _log.info(
                "API key %s created for tenant %s with scopes %s",
                row.prefix,
                row.tenant_id,
                ",".join(row.scopes),
            )
            return answer(row, new.key)

        # The answer holds the plaintext key: sealed at rest, bound to the request id it answers.
        bound = f"request_id:{rid.owner}:{rid.method}:{rid.value}" if rid else ""
        return await self._store.once(
            rid,
            create,
            seal=lambda plain: self._sealer.seal(plain, bound),
            unseal=lambda sealed: self._sealer.open(sealed, bound),
        )

    async def list(self, tenant_id: str, *, show_revoked: bool, after: str, limit: int) -> list[KeyRow]:
        if not tenant_id:
            raise InvalidArgument([("tenant_id", "a tenant id is required")])
        return await self._store.list_keys(tenant_id, show_revoked=show_revoked, after=after, limit=limit)

    async def revoke(self, id_or_prefix: str) -> KeyRow:
        if not id_or_prefix:
            raise InvalidArgument([("api_key", "the key's id or prefix is required")])
        if key_prefix(id_or_prefix):
            # A whole key pasted by mistake: refuse it rather than look it up by content.
            raise InvalidArgument(
                [("api_key", "give the key's id or prefix (pw_xxxxxxxx), not the key itself")]
            )
        row = await self._store.revoke_key(id_or_prefix)
        _log.info("API key %s of tenant %s revoked", row.prefix, row.tenant_id)
        return row

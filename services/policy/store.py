"""PostgreSQL access for tenants and API keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

__all__ = ["KeyRecord", "PolicyStore"]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    tenant_id: str
    scopes: tuple[str, ...]
    prefix: str
    sandbox: bool


class PolicyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def find_key(self, key_hash: bytes) -> KeyRecord | None:
        row = await self._pool.fetchrow(
            "SELECT k.tenant_id, k.scopes, k.prefix, t.sandbox FROM api_keys k"
            " JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = $1 AND k.revoke_time IS NULL",
            key_hash,
        )
        if row is None:
            return None
        return KeyRecord(str(row["tenant_id"]), tuple(row["scopes"]), row["prefix"], row["sandbox"])

    async def create_tenant(self, name: str, *, prefix: str, key_hash: bytes, scopes: tuple[str, ...]) -> str:
        tenant_id = uuid.uuid4()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, $2)", tenant_id, name)
            await conn.execute(
                "INSERT INTO api_keys (id, tenant_id, prefix, key_hash, scopes) VALUES ($1, $2, $3, $4, $5)",
                uuid.uuid4(),
                tenant_id,
                prefix,
                key_hash,
                list(scopes),
            )
        return str(tenant_id)

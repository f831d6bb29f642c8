"""PostgreSQL access for sending domains."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from libs.errors import AlreadyExists, NotFound
from libs.request_ids import RequestId
from services.policy.db import Db, run_once
from services.policy.records import DomainRow

__all__ = ["DomainStore"]

_COLUMNS = (
    "id, name, rsa_selector, rsa_public, ed25519_selector, ed25519_public, verified,"
    " record_status::text AS record_status, create_time, check_time, verify_time"
)


def _row(r: asyncpg.Record) -> DomainRow:
    return DomainRow(**{**dict(r), "id": str(r["id"]), "record_status": json.loads(r["record_status"])})


class DomainStore:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def once(self, rid: RequestId | None, create: Callable[[DomainStore], Awaitable[bytes]]) -> bytes:
        """`create` on a store bound to one transaction that also claims `rid`."""
        return await run_once(self._db, rid, lambda conn: create(DomainStore(conn)))

    async def create(
        self,
        domain_id: str,
        tenant_id: str,
        name: str,
        *,
        rsa_selector: str,
        rsa_private: bytes,
        rsa_public: str,
        ed25519_selector: str,
        ed25519_private: bytes,
        ed25519_public: str,
    ) -> DomainRow:
        try:
            row = await self._db.fetchrow(
                "INSERT INTO domains (id, tenant_id, name, rsa_selector, rsa_private, rsa_public, ed25519_selector,"
                f" ed25519_private, ed25519_public) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_COLUMNS}",
                uuid.UUID(domain_id),
                uuid.UUID(tenant_id),
                name,
                rsa_selector,
                rsa_private,
                rsa_public,
                ed25519_selector,
                ed25519_private,
                ed25519_public,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"domain '{name}' is already registered", field="name") from None
        if row is None:
            raise RuntimeError("INSERT … RETURNING returned no row")
        return _row(row)

    async def get(self, tenant_id: str, name: str) -> DomainRow:
        row = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM domains WHERE tenant_id = $1 AND name = $2", uuid.UUID(tenant_id), name
        )
        if row is None:
            raise NotFound(f"domain '{name}' not found")
        return _row(row)

    async def list(self, tenant_id: str, *, after: str, limit: int) -> list[DomainRow]:
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM domains WHERE tenant_id = $1 AND name > $2 ORDER BY name LIMIT $3",
            uuid.UUID(tenant_id),
            after,
            limit,
        )
        return [_row(r) for r in rows]

    async def record_check(self, domain_id: str, statuses: dict[str, int], verified: bool) -> DomainRow:
        row = await self._db.fetchrow(
            "UPDATE domains SET record_status = $2::jsonb, verified = $3, check_time = now(),"
            " verify_time = CASE WHEN $3 THEN COALESCE(verify_time, now()) ELSE verify_time END"
            f" WHERE id = $1 RETURNING {_COLUMNS}",
            uuid.UUID(domain_id),
            json.dumps(statuses),
            verified,
        )
        if row is None:
            raise NotFound("domain not found")
        return _row(row)

    async def delete(self, tenant_id: str, name: str) -> None:
        done = await self._db.execute(
            "DELETE FROM domains WHERE tenant_id = $1 AND name = $2", uuid.UUID(tenant_id), name
        )
        if done == "DELETE 0":
            raise NotFound(f"domain '{name}' not found")

    async def is_verified(self, tenant_id: str, name: str) -> bool:
        return bool(
            await self._db.fetchval(
                "SELECT verified FROM domains WHERE tenant_id = $1 AND name = $2", uuid.UUID(tenant_id), name
            )
        )

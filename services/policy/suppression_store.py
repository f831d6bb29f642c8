"""PostgreSQL access for suppression lists."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg

from libs.coalesce import Coalescer
from libs.errors import NotFound
from libs.failures import dependency_failure
from libs.request_ids import RequestId
from services.policy.db import Db, run_once, transaction
from services.policy.suppressions import Entry

__all__ = ["CoalescedLookups", "SuppressionStore"]

_COLUMNS = "address, reason, grp, source_message_id, expire_time, create_time"


def _entry(row: asyncpg.Record) -> Entry:
    return Entry(
        address=row["address"],
        reason=row["reason"],
        group=row["grp"],
        source_message_id=row["source_message_id"],
        expire_time=row["expire_time"],
        create_time=row["create_time"],
    )


class SuppressionStore:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def once(
        self, rid: RequestId | None, create: Callable[[SuppressionStore], Awaitable[bytes]]
    ) -> bytes:
        """`create` on a store bound to one transaction that also claims `rid`."""
        return await run_once(self._db, rid, lambda conn: create(SuppressionStore(conn)))

    async def upsert(self, tenant_id: str, entries: Sequence[Entry]) -> list[Entry]:
        """NOT_FOUND for an unknown tenant (the foreign key says so; no separate lookup)."""
        try:
            tid = uuid.UUID(tenant_id)
            return await self._upsert(tid, entries)
        except ValueError:
            raise NotFound(f"tenant '{tenant_id}' not found") from None
        except asyncpg.ForeignKeyViolationError:
            raise NotFound(f"tenant '{tenant_id}' not found") from None

    async def _upsert(self, tenant_id: uuid.UUID, entries: Sequence[Entry]) -> list[Entry]:
        async with transaction(self._db) as conn:
            rows = await conn.fetch(
                "INSERT INTO suppressions (tenant_id, address, grp, reason, source_message_id, expire_time)"
                " SELECT $1, e.address, e.grp, e.reason, e.source, e.expire"
                " FROM unnest($2::text[], $3::text[], $4::smallint[], $5::uuid[], $6::timestamptz[])"
                " AS e(address, grp, reason, source, expire)"
                " ON CONFLICT (tenant_id, address, grp) DO UPDATE SET reason = excluded.reason,"
                " source_message_id = excluded.source_message_id, expire_time = excluded.expire_time,"
                f" create_time = now() RETURNING {_COLUMNS}",
                tenant_id,
                [e.address for e in entries],
                [e.group for e in entries],
                [e.reason for e in entries],
                [e.source_message_id for e in entries],
                [e.expire_time for e in entries],
            )
        stored = {(r["address"], r["grp"]): _entry(r) for r in rows}
        return [stored[(e.address, e.group)] for e in entries]

    async def get(self, tenant_id: str, address: str, group: str) -> Entry | None:
        row = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM suppressions WHERE tenant_id = $1 AND address = $2 AND grp = $3"
            " AND (expire_time IS NULL OR expire_time > now())",
            uuid.UUID(tenant_id),
            address,
            group,
        )
        return None if row is None else _entry(row)

    async def list(
        self, tenant_id: str, *, reason: int, group: str | None, after: tuple[str, str] | None, limit: int
    ) -> list[Entry]:
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM suppressions WHERE tenant_id = $1 AND ($2 = 0 OR reason = $2)"
            " AND ($3::text IS NULL OR grp = $3) AND ($4::text IS NULL OR (address, grp) > ($4, $5))"
            " AND (expire_time IS NULL OR expire_time > now()) ORDER BY address, grp LIMIT $6",
            uuid.UUID(tenant_id),
            reason,
            group,
            after[0] if after else None,
            after[1] if after else "",
            limit,
        )
        return [_entry(r) for r in rows]

    async def delete(self, tenant_id: str, address: str, group: str) -> bool:
        done = await self._db.execute(
            "DELETE FROM suppressions WHERE tenant_id = $1 AND address = $2 AND grp = $3",
            uuid.UUID(tenant_id),
            address,
            group,
        )
        return done != "DELETE 0"

    async def suppressed(self, tenant_id: str, addresses: Sequence[str], group: str) -> set[str]:
        """Which of these (normalised) addresses may not get this send: one indexed lookup."""
        rows = await self._db.fetch(
            "SELECT DISTINCT address FROM suppressions WHERE tenant_id = $1 AND address = ANY($2::text[])"
            " AND (grp = '' OR grp = $3) AND (expire_time IS NULL OR expire_time > now())",
            uuid.UUID(tenant_id),
            list(addresses),
            group,
        )
        return {r["address"] for r in rows}


@dataclass(frozen=True, slots=True)
class _Lookup:
    tenant_id: str
    group: str
    addresses: tuple[str, ...]  # normalised


def _outage(exc: Exception) -> bool:
    return dependency_failure(exc) is not None


class CoalescedLookups:
    """Admission's suppression lookups: the ones asked while a statement is in flight share the
    next (libs.coalesce), so concurrent sends to new addresses cost one round trip and one
    PostgreSQL transaction per batch instead of one each. Every answer is still read from the
    database when asked, so nothing about suppressions becomes staler."""

    def __init__(self, pool: asyncpg.Pool, *, batch: int = 64) -> None:
        self._pool = pool
        self._lookups: Coalescer[_Lookup, set[str]] = Coalescer(self._run, max_batch=batch, outage=_outage)

    async def suppressed(self, tenant_id: str, addresses: Sequence[str], group: str) -> set[str]:
        """`SuppressionStore.suppressed`, shared with the lookups asked at the same time."""
        return await self._lookups.load(_Lookup(tenant_id, group, tuple(addresses)))

    async def close(self) -> None:
        await self._lookups.close()

    async def _run(self, lookups: Sequence[_Lookup]) -> list[set[str]]:
        asked = [(i, lookup, address) for i, lookup in enumerate(lookups) for address in lookup.addresses]
        rows = await self._pool.fetch(
            "SELECT DISTINCT q.i, q.address"
            " FROM unnest($1::int[], $2::uuid[], $3::text[], $4::text[]) AS q(i, tenant_id, address, grp)"
            " JOIN suppressions s ON s.tenant_id = q.tenant_id AND s.address = q.address"
            " AND (s.grp = '' OR s.grp = q.grp)"
            " WHERE s.expire_time IS NULL OR s.expire_time > now()",
            [i for i, _, _ in asked],
            [uuid.UUID(lookup.tenant_id) for _, lookup, _ in asked],
            [address for _, _, address in asked],
            [lookup.group for _, lookup, _ in asked],
        )
        found: list[set[str]] = [set() for _ in lookups]
        for row in rows:
            found[row["i"]].add(row["address"])
        return found

"""PostgreSQL access for the suppression outbox (migration 0012): claim, retire, back off."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import asyncpg

from libs.request_id_store import Connection
from services.events.suppression_rule import PendingSuppression

__all__ = ["SuppressionOutbox", "queue_suppression", "queue_suppressions"]


async def queue_suppression(conn: Connection, item: PendingSuppression) -> None:
    """Queue in the caller's transaction (the one that stores the event)."""
    await queue_suppressions(conn, [item])


async def queue_suppressions(conn: Connection, items: Sequence[PendingSuppression]) -> None:
    """Queue several in the caller's transaction (the one that stores their events)."""
    if not items:
        return
    await conn.executemany(
        "INSERT INTO suppression_outbox (event_id, tenant_id, address, reason, source_message_id, detail)"
        " VALUES ($1, $2::uuid, $3, $4, $5::uuid, $6) ON CONFLICT (event_id) DO NOTHING",
        [
            (i.event_id, i.tenant_id, i.address, i.reason, i.source_message_id or None, i.detail)
            for i in items
        ],
    )


class SuppressionOutbox:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim_due(self, *, limit: int, lease: timedelta) -> list[PendingSuppression]:
        rows = await self._pool.fetch(
            "UPDATE suppression_outbox SET next_attempt_time = now() + $2::interval WHERE event_id IN ("
            " SELECT event_id FROM suppression_outbox WHERE next_attempt_time <= now()"
            " ORDER BY next_attempt_time LIMIT $1 FOR UPDATE SKIP LOCKED)"
            " RETURNING event_id, tenant_id::text, address, reason, source_message_id::text, detail, attempts",
            limit,
            lease,
        )
        return [
            PendingSuppression(
                event_id=r["event_id"],
                tenant_id=r["tenant_id"],
                address=r["address"],
                reason=r["reason"],
                source_message_id=r["source_message_id"] or "",
                detail=r["detail"],
                attempts=r["attempts"],
            )
            for r in rows
        ]

    async def done(self, event_ids: Sequence[str]) -> None:
        await self._pool.execute(
            "DELETE FROM suppression_outbox WHERE event_id = ANY($1::text[])", list(event_ids)
        )

    async def retry_later(self, delays: Sequence[tuple[str, float]], *, error: str) -> None:
        await self._pool.execute(
            "UPDATE suppression_outbox AS o SET attempts = o.attempts + 1, last_error = $3,"
            " next_attempt_time = now() + make_interval(secs => d.seconds)"
            " FROM unnest($1::text[], $2::float8[]) AS d(event_id, seconds) WHERE o.event_id = d.event_id",
            [event_id for event_id, _ in delays],
            [seconds for _, seconds in delays],
            error,
        )

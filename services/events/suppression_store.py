"""PostgreSQL access for the suppression outbox (migration 0012): claim, retire, back off."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import asyncpg

from services.events.suppression_rule import PendingSuppression

__all__ = ["SuppressionOutbox", "queue_suppressions_sql", "suppression_columns"]


def queue_suppressions_sql(first: int, stored: str) -> str:
    """An INSERT queuing the suppressions given as the six arrays of `suppression_columns` (the
    parameters from `$first` on) whose event is among the `event_id`s of `stored` (a CTE of the
    storing statement: a redelivered event queues nothing, the tenant may have lifted it since)."""
    a = [f"${n}" for n in range(first, first + 6)]
    return (
        "INSERT INTO suppression_outbox (event_id, tenant_id, address, reason, source_message_id, detail)"
        " SELECT s.event_id, s.tenant::uuid, s.address, s.reason, NULLIF(s.source, '')::uuid, s.detail"
        f" FROM unnest({a[0]}::text[], {a[1]}::text[], {a[2]}::text[], {a[3]}::smallint[], {a[4]}::text[],"
        f" {a[5]}::text[]) AS s(event_id, tenant, address, reason, source, detail)"
        f" WHERE s.event_id IN (SELECT event_id FROM {stored}) ON CONFLICT (event_id) DO NOTHING"
    )


def suppression_columns(items: Sequence[PendingSuppression]) -> list[list[str] | list[int]]:
    return [
        [i.event_id for i in items],
        [i.tenant_id for i in items],
        [i.address for i in items],
        [i.reason for i in items],
        [i.source_message_id for i in items],
        [i.detail for i in items],
    ]


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

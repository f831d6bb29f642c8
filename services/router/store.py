"""PostgreSQL access for the routing step."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from postwire.internal.v1 import bus_pb2

from libs.event_outbox import insert_events

__all__ = ["RouteRow", "RouterStore"]


@dataclass(frozen=True, slots=True)
class RouteRow:
    id: str
    tenant_id: str
    state: str
    request: bytes
    stream: str
    tags: list[str]
    metadata: str
    send_time: datetime | None
    recipients: list[tuple[int, str, str]]  # (position, address, state)
    template_versions: str | None = None  # JSON, see libs.render_request


class RouterStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def load(self, message_id: str, *, lease: timedelta | None = None) -> RouteRow | None:
        """The message if it still waits for routing; with `lease`, the sweeper also leaves it
        alone that long, since JetStream itself redelivers it if this replica dies."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "UPDATE messages SET route_due_time = greatest(route_due_time, now() + $2::interval)"
                " WHERE id = $1 AND state = 'accepted'"
                " RETURNING id, tenant_id, state, request, stream, tags, metadata::text AS metadata, send_time,"
                " template_versions::text AS template_versions",
                uuid.UUID(message_id),
                lease or timedelta(0),
            )
            if row is None:
                return None
            recipients = await conn.fetch(
                "SELECT position, address, state FROM recipients WHERE message_id = $1 ORDER BY position",
                row["id"],
            )
        return RouteRow(
            id=str(row["id"]),
            tenant_id=str(row["tenant_id"]),
            state=row["state"],
            request=row["request"],
            stream=row["stream"],
            tags=list(row["tags"]),
            metadata=row["metadata"],
            send_time=row["send_time"],
            recipients=[(r["position"], r["address"], r["state"]) for r in recipients],
            template_versions=row["template_versions"],
        )

    async def mark_routed(
        self, message_id: str, *, mime: bytes, envelope_from: str, rfc822_id: str, stall: timedelta
    ) -> bool:
        """Store the built message and queue its recipients; False if another replica did it first."""
        mid = uuid.UUID(message_id)
        async with self._pool.acquire() as conn, conn.transaction():
            done = await conn.execute(
                "UPDATE messages SET state = 'routed', mime = $2, envelope_from = $3, rfc822_message_id = $4,"
                " update_time = now() WHERE id = $1 AND state = 'accepted'",
                mid,
                mime,
                envelope_from,
                rfc822_id,
            )
            if done != "UPDATE 1":
                return False
            # next_attempt_time here is when the worker's sweeper steps in if the task is lost.
            await conn.execute(
                "UPDATE recipients SET state = 'queued', next_attempt_time = now() + $2::interval,"
                " update_time = now() WHERE message_id = $1 AND state IN ('accepted', 'scheduled')",
                mid,
                stall,
            )
        return True

    async def mark_failed(
        self,
        message_id: str,
        events: Sequence[bus_pb2.EventEnvelope],
        *,
        reason: str,
        state: str = "failed",
    ) -> bool:
        """Give the message up (`failed` or `expired`) with its events; False if it was no longer
        waiting for routing."""
        mid = uuid.UUID(message_id)
        async with self._pool.acquire() as conn, conn.transaction():
            done = await conn.execute(
                "UPDATE messages SET state = $2, update_time = now() WHERE id = $1 AND state = 'accepted'",
                mid,
                state,
            )
            if done != "UPDATE 1":
                return False
            await conn.execute(
                "UPDATE recipients SET state = $2, failure_reason = $3, update_time = now()"
                " WHERE message_id = $1 AND state IN ('accepted', 'scheduled')",
                mid,
                state,
                reason,
            )
            await insert_events(conn, events)
        return True

    async def count_failure(self, message_id: str) -> int | None:
        """One more failed routing attempt; the count so far, or None if routing is over."""
        value = await self._pool.fetchval(
            "UPDATE messages SET route_failures = route_failures + 1 WHERE id = $1 AND state = 'accepted'"
            " RETURNING route_failures",
            uuid.UUID(message_id),
        )
        return None if value is None else int(value)

    async def give_up_start(self, message_id: str) -> datetime | None:
        """When the message's give-up clock started (its send time if scheduled), if still waiting."""
        value = await self._pool.fetchval(
            "SELECT greatest(create_time, coalesce(send_time, create_time)) FROM messages"
            " WHERE id = $1 AND state = 'accepted'",
            uuid.UUID(message_id),
        )
        return value if isinstance(value, datetime) else None

    async def defer(self, message_id: str, *, until: timedelta) -> None:
        """Keep the sweeper away while JetStream holds the message for a delayed redelivery."""
        await self._pool.execute(
            "UPDATE messages SET route_due_time = now() + $2::interval WHERE id = $1 AND state = 'accepted'",
            uuid.UUID(message_id),
            until,
        )

    async def claim_stalled(self, *, stall: timedelta, limit: int = 500) -> list[str]:
        """Messages due for routing whose task may be lost; pushes their due time out by `stall`
        so one sweep's claim is not repeated by the next (or by another replica)."""
        rows = await self._pool.fetch(
            "UPDATE messages SET route_due_time = now() + $1::interval WHERE id IN ("
            " SELECT id FROM messages WHERE state = 'accepted' AND route_due_time <= now()"
            " ORDER BY route_due_time LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id",
            stall,
            limit,
        )
        return [str(r["id"]) for r in rows]

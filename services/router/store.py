"""PostgreSQL access for the routing step; the statements themselves are libs.pipeline's."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from postwire.internal.v1 import bus_pb2

from libs.event_outbox import insert_events
from libs.mail.states import MessageState, RecipientState
from libs.pipeline import messages, recipients

__all__ = ["RouteRow", "RouterStore"]


@dataclass(frozen=True, slots=True)
class RouteRow:
    id: str
    tenant_id: str
    state: MessageState
    request: bytes
    stream: str
    tags: list[str]
    metadata: str
    create_time: datetime
    send_time: datetime | None
    recipients: list[tuple[int, str, RecipientState]]  # (position, address, state)
    template_versions: str | None = None  # JSON, see libs.render_request
    # JSON {"subject", "html_body", "text_body"}: the template as rendered at acceptance, or None
    # (no template, or accepted before rendered parts were stored: render now).
    rendered_parts: str | None = None


class RouterStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def load(self, message_id: str, *, lease: timedelta | None = None) -> RouteRow | None:
        """The message if it still waits for routing; with `lease`, the sweeper also leaves it
        alone that long, since JetStream itself redelivers it if this replica dies."""
        async with self._pool.acquire() as conn:
            row = await messages.lease_for_routing(conn, uuid.UUID(message_id), lease=lease or timedelta(0))
            if row is None:
                return None
            rows = await conn.fetch(
                "SELECT position, address, state FROM recipients WHERE message_id = $1 ORDER BY position",
                row["id"],
            )
        return RouteRow(
            id=str(row["id"]),
            tenant_id=str(row["tenant_id"]),
            state=MessageState(row["state"]),
            request=row["request"],
            stream=row["stream"],
            tags=list(row["tags"]),
            metadata=row["metadata"],
            create_time=row["create_time"],
            send_time=row["send_time"],
            recipients=[(r["position"], r["address"], RecipientState(r["state"])) for r in rows],
            template_versions=row["template_versions"],
            rendered_parts=row["rendered_parts"],
        )

    async def mark_routed(
        self, message_id: str, *, mime: bytes, envelope_from: str, rfc822_id: str, stall: timedelta
    ) -> bool:
        """Store the built message and queue its recipients; False if another replica did it first."""
        mid = uuid.UUID(message_id)
        async with self._pool.acquire() as conn, conn.transaction():
            if not await messages.mark_routed(
                conn, mid, mime=mime, envelope_from=envelope_from, rfc822_id=rfc822_id
            ):
                return False
            await recipients.queue_routed(conn, mid, stall=stall)
        return True

    async def mark_failed(
        self,
        message_id: str,
        events: Sequence[bus_pb2.EventEnvelope],
        *,
        reason: str,
        expired: bool = False,
    ) -> bool:
        """Give the message up (failed, or expired) with its events; False if it was no longer
        waiting for routing."""
        mid = uuid.UUID(message_id)
        message_state, recipient_state = (
            (MessageState.EXPIRED, RecipientState.EXPIRED)
            if expired
            else (MessageState.FAILED, RecipientState.FAILED)
        )
        async with self._pool.acquire() as conn, conn.transaction():
            if not await messages.give_up(conn, mid, state=message_state):
                return False
            await recipients.give_up_unrouted(conn, mid, state=recipient_state, reason=reason)
            await insert_events(conn, events)
        return True

    async def count_failure(self, message_id: str) -> int | None:
        """One more failed routing attempt; the count so far, or None if routing is over."""
        return await messages.count_route_failure(self._pool, uuid.UUID(message_id))

    async def times(self, message_id: str) -> tuple[datetime, datetime | None] | None:
        """(create_time, send_time) if the message still waits for routing."""
        return await messages.routing_times(self._pool, uuid.UUID(message_id))

    async def defer(self, message_id: str, *, until: timedelta) -> None:
        """Keep the sweeper away while JetStream holds the message for a delayed redelivery."""
        await messages.defer_routing(self._pool, uuid.UUID(message_id), until=until)

    async def claim_stalled(self, *, stall: timedelta, limit: int = 500) -> list[str]:
        """Messages due for routing whose task may be lost; pushes their due time out by `stall`
        so one sweep's claim is not repeated by the next (or by another replica)."""
        return [str(mid) for mid in await messages.claim_stalled(self._pool, stall=stall, limit=limit)]

"""PostgreSQL access for the inbound listener: recipient moves and their events in one
transaction (the event through the outbox, libs.event_outbox), and the drop counters."""

from __future__ import annotations

import json
import uuid

import asyncpg
from postwire.internal.v1 import bus_pb2
from postwire.v1 import event_pb2, message_pb2

from libs.event_outbox import EventContext, event_known, insert_events, new_event
from libs.mail.states import RecipientState
from libs.pipeline import recipients
from libs.pipeline.connection import Tx
from services.inbound.feedback import AsyncBounce, Complaint, Target, bounce_moves

__all__ = ["InboundStore"]

_TARGET = (
    "SELECT m.tenant_id, m.stream, m.tags, m.metadata::text AS metadata, r.address, r.state"
    " FROM recipients r JOIN messages m ON m.id = r.message_id"
    " WHERE r.message_id = $1 AND r.position = $2 FOR UPDATE OF r"
)


class InboundStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record_bounce(self, bounce: AsyncBounce) -> tuple[str, bus_pb2.EventEnvelope | None]:
        """(counter, event to publish): "bounced" with the event, or "duplicate" / "unmatched"."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_TARGET, uuid.UUID(bounce.target.message_id), bounce.target.index)
            if row is None:
                await _count(conn, "unmatched")
                return "unmatched", None
            if not bounce_moves(RecipientState(row["state"])):
                # Redelivered report, or a recipient that had already bounced, expired or failed.
                await _count(conn, "duplicate")
                return "duplicate", None
            reply = bounce.reply
            await recipients.bounce(
                conn,
                uuid.UUID(bounce.target.message_id),
                bounce.target.index,
                code=reply.code,
                enhanced=reply.enhanced,
                text=reply.text,
            )
            event = new_event(
                _context(bounce.target, row),
                event_pb2.EVENT_TYPE_BOUNCED,
                row["address"],
                discriminator=f"{bounce.target.index}:async",
                smtp_reply=message_pb2.SmtpReply(
                    code=reply.code, enhanced_code=reply.enhanced, text=reply.text
                ),
                reason=bounce.reason,
                bounce_category=bounce.category,
                remote=message_pb2.RemoteServer(host=bounce.remote_host) if bounce.remote_host else None,
            )
            event.event.asynchronous = True
            await insert_events(conn, [event])
            await _count(conn, "bounced")
            return "bounced", event

    async def record_complaint(self, complaint: Complaint) -> tuple[str, bus_pb2.EventEnvelope | None]:
        """(counter, event): 'complained' with the event, 'duplicate' when this recipient's
        complaint is already known, or 'unmatched'. The recipient's state stays as it is."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_TARGET, uuid.UUID(complaint.target.message_id), complaint.target.index)
            if row is None:
                await _count(conn, "unmatched")
                return "unmatched", None
            event = new_event(
                _context(complaint.target, row),
                event_pb2.EVENT_TYPE_COMPLAINED,
                row["address"],
                discriminator=str(complaint.target.index),
                reason=complaint.reason,
            )
            event.event.asynchronous = True
            # The deterministic id makes a redelivered report one event: the outbox row, or the
            # stored event once the events service has taken it, already exists.
            known = await event_known(conn, event.event.id)
            if known:
                await _count(conn, "duplicate")
                return "duplicate", None
            await insert_events(conn, [event])
            await _count(conn, "complained")
            return "complained", event

    async def count(self, name: str) -> None:
        async with self._pool.acquire() as conn:
            await _count(conn, name)


def _context(target: Target, row: asyncpg.Record) -> EventContext:
    return EventContext(
        str(row["tenant_id"]),
        target.message_id,
        row["stream"],
        list(row["tags"]),
        json.loads(row["metadata"]),
    )


async def _count(conn: Tx, name: str) -> None:
    await conn.execute(
        "INSERT INTO inbound_counters (name, count) VALUES ($1, 1)"
        " ON CONFLICT (name) DO UPDATE SET count = inbound_counters.count + 1, update_time = now()",
        name,
    )

"""Failure bookkeeping for the delivery stage outside the SMTP conversation (libs.bus.StageFailures).

SMTP replies are outcomes (smtp_outcome.py decides delivered, bounced or deferred). What is
counted here is the rest: the stage itself failing on a message (a row it cannot use, a bug),
which is retried with back-off and after POSTWIRE_STAGE_MAX_ATTEMPTS fails the recipients with
"mta_worker: <error class>"; and an outage (PostgreSQL away), which never counts and gives up
only at the recipients' give-up time. Counts live on the recipients' rows because the retry
scheduler re-publishes with fresh JetStream ids.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from nats.aio.msg import Msg
from postwire.internal.v1 import bus_pb2
from postwire.v1 import event_pb2

from libs.bus import Bus
from libs.event_outbox import EventContext, insert_events, new_event, publish_events
from libs.mail.states import RecipientState
from libs.pipeline import recipients
from libs.pipeline.connection import Tx
from libs.stage_retry import StageRetry

__all__ = ["DeliveryFailures"]

_log = logging.getLogger(__name__)
EXPIRED_REASON = "mta_worker: a dependency was unavailable until the give-up time"


class DeliveryFailures:
    def __init__(self, pool: asyncpg.Pool, bus: Bus, retry: StageRetry, *, stall: timedelta) -> None:
        self._pool = pool
        self._bus = bus
        self._retry = retry
        self._stall = stall

    async def unavailable(self, msg: Msg, delay: float) -> float | None:
        mid = _task_id(msg)
        if mid is None:
            return None
        async with self._pool.acquire() as conn, conn.transaction():
            start = await recipients.queued_since(conn, mid)
            if start is None:
                return None  # nothing queued any more
            if datetime.now(UTC) >= self._retry.give_up_time(start):
                events = await self._give_up(conn, mid, RecipientState.EXPIRED, EXPIRED_REASON)
            else:
                # The retry scheduler stays away while JetStream holds the task for `delay`.
                await recipients.hold_queued(conn, mid, at_least=timedelta(seconds=delay) + self._stall)
                return delay
        await publish_events(self._bus, events)
        return None

    async def failed(self, msg: Msg, reason: str) -> float | None:
        mid = _task_id(msg)
        if mid is None:
            return None
        async with self._pool.acquire() as conn, conn.transaction():
            attempts = await recipients.count_stage_failure(conn, mid)
            if attempts is None:
                return None
            if not self._retry.exhausted(attempts):
                delay = self._retry.delay(attempts)
                await recipients.reschedule_queued(conn, mid, after=timedelta(seconds=delay) + self._stall)
                return delay
            events = await self._give_up(conn, mid, RecipientState.FAILED, reason)
        _log.error("message %s failed after %d attempts: %s", mid, attempts, reason)
        await publish_events(self._bus, events)
        return None

    async def _give_up(
        self, conn: Tx, mid: uuid.UUID, state: RecipientState, reason: str
    ) -> list[bus_pb2.EventEnvelope]:
        rows = await recipients.give_up_queued(conn, mid, state=state, reason=reason)
        message = await conn.fetchrow(
            "SELECT tenant_id, stream, tags, metadata::text AS metadata FROM messages WHERE id = $1", mid
        )
        if not rows or message is None:
            return []
        ctx = EventContext(
            str(message["tenant_id"]),
            str(mid),
            message["stream"],
            list(message["tags"]),
            json.loads(message["metadata"]),
        )
        event_type = (
            event_pb2.EVENT_TYPE_EXPIRED if state is RecipientState.EXPIRED else event_pb2.EVENT_TYPE_FAILED
        )
        events = [
            new_event(ctx, event_type, r["address"], discriminator=f"{r['position']}:stage", reason=reason)
            for r in sorted(rows, key=lambda r: r["position"])
        ]
        await insert_events(conn, events)
        return events


def _task_id(msg: Msg) -> uuid.UUID | None:
    """The task's message id; None for a payload that can never be processed (term it)."""
    try:
        return uuid.UUID(bus_pb2.DeliveryTask.FromString(msg.data).message_id)
    except Exception:
        _log.error("undecodable delivery task dropped")
        return None

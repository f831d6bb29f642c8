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
            start = await conn.fetchval(
                "SELECT min(coalesce(r.first_attempt_time, m.create_time)) FROM recipients r"
                " JOIN messages m ON m.id = r.message_id WHERE r.message_id = $1 AND r.state = 'queued'",
                mid,
            )
            if start is None:
                return None  # nothing queued any more
            if datetime.now(UTC) >= self._retry.give_up_time(start):
                events = await self._give_up(conn, mid, "expired", EXPIRED_REASON)
            else:
                # The retry scheduler stays away while JetStream holds the task for `delay`.
                await conn.execute(
                    "UPDATE recipients SET next_attempt_time = greatest(next_attempt_time, now() + $2::interval)"
                    " WHERE message_id = $1 AND state = 'queued'",
                    mid,
                    timedelta(seconds=delay) + self._stall,
                )
                return delay
        await publish_events(self._bus, events)
        return None

    async def failed(self, msg: Msg, reason: str) -> float | None:
        mid = _task_id(msg)
        if mid is None:
            return None
        async with self._pool.acquire() as conn, conn.transaction():
            attempts = await conn.fetchval(
                "WITH counted AS (UPDATE recipients SET stage_failures = stage_failures + 1, lease_until = NULL"
                " WHERE message_id = $1 AND state = 'queued' RETURNING stage_failures)"
                " SELECT max(stage_failures) FROM counted",
                mid,
            )
            if attempts is None:
                return None
            if not self._retry.exhausted(attempts):
                delay = self._retry.delay(attempts)
                await conn.execute(
                    "UPDATE recipients SET next_attempt_time = now() + $2::interval"
                    " WHERE message_id = $1 AND state = 'queued'",
                    mid,
                    timedelta(seconds=delay) + self._stall,
                )
                return delay
            events = await self._give_up(conn, mid, "failed", reason)
        _log.error("message %s failed after %d attempts: %s", mid, attempts, reason)
        await publish_events(self._bus, events)
        return None

    async def _give_up(
        self, conn: asyncpg.Connection, mid: uuid.UUID, state: str, reason: str
    ) -> list[bus_pb2.EventEnvelope]:
        rows = await conn.fetch(
            "UPDATE recipients SET state = $2, failure_reason = $3, lease_until = NULL, next_attempt_time = NULL,"
            " update_time = now() WHERE message_id = $1 AND state = 'queued' RETURNING position, address",
            mid,
            state,
            reason,
        )
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
        event_type = event_pb2.EVENT_TYPE_EXPIRED if state == "expired" else event_pb2.EVENT_TYPE_FAILED
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

"""Events written in the same transaction as the state change they report, then published.

The row in `event_outbox` lives until the events service has stored the event, so an event
survives a failed publish, a crash after commit and a wiped JetStream store alike: the events
service's sweeper re-publishes rows that linger.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import asyncpg
from postwire.internal.v1 import bus_pb2
from postwire.v1 import event_pb2

from libs.bus import Bus, event_subject

# Re-exported: building an envelope is pure and lives apart so use cases can do it without I/O.
from libs.event_envelopes import EventContext, new_event

__all__ = ["EventContext", "insert_events", "new_event", "publish_events"]

_log = logging.getLogger(__name__)
# Callers write events inside their own transaction, on a pooled connection or a bare one.
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


def _subject(envelope: bus_pb2.EventEnvelope) -> str:
    return event_subject(
        envelope.tenant_id, event_pb2.EventType.Name(envelope.event.type).removeprefix("EVENT_TYPE_").lower()
    )


async def insert_events(conn: Connection, envelopes: Iterable[bus_pb2.EventEnvelope]) -> None:
    rows = [(e.event.id, e.tenant_id, _subject(e), e.SerializeToString()) for e in envelopes]
    if rows:
        await conn.executemany(
            "INSERT INTO event_outbox (event_id, tenant_id, subject, payload) VALUES ($1, $2::uuid, $3, $4)"
            " ON CONFLICT (event_id) DO NOTHING",
            rows,
        )


async def publish_events(bus: Bus, envelopes: Iterable[bus_pb2.EventEnvelope]) -> None:
    """Publish after commit; a failure is only logged because the outbox sweeper retries."""
    results = await asyncio.gather(
        *(bus.publish(_subject(e), e.SerializeToString(), msg_id=e.event.id) for e in envelopes),
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        _log.warning("%d event publishes deferred to the sweeper: %s", len(failed), type(failed[0]).__name__)

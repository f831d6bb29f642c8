"""Events written in the same transaction as the state change they report, then published.

The row in `event_outbox` lives until the events service has stored the event, so an event
survives a failed publish, a crash after commit and a wiped JetStream store alike: the events
service's sweeper re-publishes rows that linger. Every statement on `event_outbox` lives in this
module (tests/unit/test_pipeline_owners.py checks it).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Iterable

import asyncpg
from postwire.internal.v1 import bus_pb2
from postwire.v1 import event_pb2

from libs.bus import Bus, event_subject

# Re-exported: building an envelope is pure and lives apart so use cases can do it without I/O.
from libs.event_envelopes import EventContext, new_event
from libs.pipeline.connection import insert_of_stored, unnest_arrays

__all__ = ["EventContext", "insert_events", "insert_new_sql", "new_arrays", "new_event", "publish_events"]

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


def insert_new_sql(first: int, stored: str) -> str:
    """insert_events for a WITH clause, of the events `new_arrays` gives as ${first}…, for the
    messages whose id the WITH query `stored` returned."""
    return insert_of_stored(
        "event_outbox", first, _NEW_COLUMNS, stored, suffix=" ON CONFLICT (event_id) DO NOTHING"
    )


_NEW_COLUMNS = (
    ("event_id", "text"),
    ("tenant_id", "uuid"),
    ("subject", "text"),
    ("payload", "bytea"),
    ("message_id", "uuid"),
)


def new_arrays(envelopes: Iterable[bus_pb2.EventEnvelope]) -> list[list[object]]:
    """The parameters of insert_new_sql: one list per column."""
    rows = [
        (e.event.id, e.tenant_id, _subject(e), e.SerializeToString(), e.event.message_id) for e in envelopes
    ]
    return unnest_arrays(rows, len(_NEW_COLUMNS))


async def publish_events(
    bus: Bus, envelopes: Iterable[bus_pb2.EventEnvelope], *, confirmed: bool = True
) -> None:
    """Publish after commit; a failure is only logged because the outbox sweeper retries. With
    `confirmed=False` the stream's PubAck is not waited for (Bus.publish): a publish
    the stream never stored is then not even logged, and the sweeper re-publishes it all the same."""
    calls = [
        bus.publish(_subject(e), e.SerializeToString(), msg_id=e.event.id, confirmed=confirmed)
        for e in envelopes
    ]
    failed: list[BaseException] = []
    if len(calls) == 1:
        # One event (a delivery outcome): awaited in place, without gather's task around it.
        try:
            await calls[0]
        except Exception as exc:
            failed.append(exc)
    else:
        results = await asyncio.gather(*calls, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        _log.warning("%d event publishes deferred to the sweeper: %s", len(failed), type(failed[0]).__name__)


# The outbox table's other statements: the events service's (store, hold, count, sweep) and the
# inbound listener's duplicate check. Nothing outside this module names the table.
__all__ += ["claim_lingering", "count_failure", "delete_stored", "event_known", "hold", "retire_stored_sql"]


async def event_known(conn: Connection, event_id: str, /) -> bool:
    """Whether the event is waiting in the outbox or already stored by the events service."""
    known = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM event_outbox WHERE event_id = $1)"
        " OR EXISTS (SELECT 1 FROM events WHERE event_id = $1)",
        event_id,
    )
    return bool(known)


async def delete_stored(conn: Connection, event_id: str, /) -> None:
    """The events service stored the event: its outbox row has done its job."""
    await conn.execute("DELETE FROM event_outbox WHERE event_id = $1", event_id)


def retire_stored_sql(event_ids: str, /) -> str:
    """A DELETE retiring the outbox rows of the events whose ids are the text[] `event_ids` (a
    parameter such as "$1"), for the statement that stores them to run as one of its steps."""
    return f"DELETE FROM event_outbox WHERE event_id = ANY({event_ids}::text[])"


async def hold(conn: Connection | asyncpg.Pool, event_ids: Iterable[str], /, *, seconds: float) -> None:
    """Keep the sweeper away while JetStream holds the event for a delayed redelivery."""
    await conn.execute(
        "UPDATE event_outbox SET publish_time = now() + $2::interval WHERE event_id = ANY($1::text[])",
        list(event_ids),
        datetime.timedelta(seconds=seconds),
    )


async def count_failure(
    conn: Connection | asyncpg.Pool, event_ids: Iterable[str], /, *, reason: str, max_attempts: int
) -> int | None:
    """One more failed attempt to store the event; at `max_attempts` the row is retired from
    sweeping with `reason` (kept for an operator). None if there is no outbox row."""
    value = await conn.fetchval(
        "UPDATE event_outbox SET failures = failures + 1,"
        " failure_reason = CASE WHEN failures + 1 >= $3 THEN $2 END,"
        " publish_time = CASE WHEN failures + 1 >= $3 THEN 'infinity'::timestamptz ELSE publish_time END"
        " WHERE event_id = ANY($1::text[]) RETURNING failures",
        list(event_ids),
        reason,
        max_attempts,
    )
    return None if value is None else int(value)


async def claim_lingering(
    conn: Connection | asyncpg.Pool, /, *, stall: datetime.timedelta, limit: int
) -> list[tuple[str, str, bytes]]:
    """Outbox rows not stored after `stall` (their publish failed or the stream lost them), as
    (event id, subject, payload); their publish time moves to now so the next sweep skips them."""
    rows = await conn.fetch(
        "UPDATE event_outbox SET publish_time = now() WHERE event_id IN ("
        " SELECT event_id FROM event_outbox WHERE publish_time <= now() - $1::interval AND failure_reason IS NULL"
        " ORDER BY publish_time LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING event_id, subject, payload",
        stall,
        limit,
    )
    return [(r["event_id"], r["subject"], r["payload"]) for r in rows]

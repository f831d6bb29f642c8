"""The suppression outbox against real PostgreSQL, in a database of its own (so the suite's events
service never drains these rows): queued once per event, hidden while claimed, kept with its
attempt count and error class on failure, gone on success."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
from postwire.internal.v1 import bus_pb2
from postwire.v1 import event_pb2, message_pb2

from libs.db import apply_migrations, connect_pool
from services.events.store import EventsStore
from services.events.suppression_rule import suppression_for
from services.events.suppression_store import SuppressionOutbox
from tests.integration.helpers import create_database


@pytest.fixture(scope="module")
def database_url(suite) -> str:
    url = create_database(suite.database_url, "postwire_suppressions")
    asyncio.run(apply_migrations(url))
    return url


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await connect_pool(database_url)
    yield pool
    await pool.close()


def hard_bounce(category: int = message_pb2.BOUNCE_CATEGORY_HARD) -> bus_pb2.EventEnvelope:
    message_id = str(uuid.uuid4())
    envelope = bus_pb2.EventEnvelope(
        tenant_id=str(uuid.uuid4()),
        event=event_pb2.Event(
            id=f"{message_id}:0:1:bounced",
            type=event_pb2.EVENT_TYPE_BOUNCED,
            message_id=message_id,
            recipient=f"gone-{uuid.uuid4().hex[:8]}@example.org",
            smtp_reply=message_pb2.SmtpReply(code=550, enhanced_code="5.1.1", text="5.1.1 User unknown"),
            bounce_category=category,  # type: ignore[arg-type]
        ),
    )
    envelope.event.create_time.GetCurrentTime()
    return envelope


async def rows(pool: asyncpg.Pool, envelope: bus_pb2.EventEnvelope) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT address, reason, source_message_id::text AS source, detail, attempts, last_error"
            " FROM suppression_outbox WHERE event_id = $1",
            envelope.event.id,
        )
    )


async def test_a_redelivered_event_queues_its_suppression_once(pool) -> None:
    store, envelope = EventsStore(pool), hard_bounce()
    await store.store(envelope, suppression=suppression_for(envelope))
    await store.store(envelope, suppression=suppression_for(envelope))
    (row,) = await rows(pool, envelope)
    assert (row["address"], row["reason"], row["source"], row["attempts"]) == (
        envelope.event.recipient,
        1,
        envelope.event.message_id,
        0,
    )
    assert row["detail"] == "hard bounce: 550 5.1.1 User unknown"

    # Once sent, a redelivery does not queue it again (the tenant may have lifted it since).
    await SuppressionOutbox(pool).done([envelope.event.id])
    await store.store(envelope, suppression=suppression_for(envelope))
    assert await rows(pool, envelope) == []


async def test_a_soft_bounce_is_stored_and_queues_nothing(pool) -> None:
    envelope = hard_bounce(message_pb2.BOUNCE_CATEGORY_SOFT)
    await EventsStore(pool).store(envelope, suppression=suppression_for(envelope))
    assert await pool.fetchval("SELECT count(*) FROM events WHERE event_id = $1", envelope.event.id) == 1
    assert await rows(pool, envelope) == []


async def test_claimed_rows_are_hidden_and_failed_ones_come_back_later(pool) -> None:
    outbox, envelope = SuppressionOutbox(pool), hard_bounce()
    await EventsStore(pool).store(envelope, suppression=suppression_for(envelope))

    claimed = [
        r
        for r in await outbox.claim_due(limit=500, lease=timedelta(seconds=60))
        if r.event_id == envelope.event.id
    ]
    assert [(r.address, r.attempts) for r in claimed] == [(envelope.event.recipient, 0)]
    # Leased: a second drainer (another replica) does not get it.
    again = await outbox.claim_due(limit=500, lease=timedelta(seconds=60))
    assert envelope.event.id not in [r.event_id for r in again]

    await outbox.retry_later([(envelope.event.id, 0.0)], error="Unavailable")
    (row,) = await rows(pool, envelope)
    assert (row["attempts"], row["last_error"]) == (1, "Unavailable")
    (back,) = [
        r
        for r in await outbox.claim_due(limit=500, lease=timedelta(seconds=60))
        if r.event_id == envelope.event.id
    ]
    assert back.attempts == 1

    await outbox.retry_later([(envelope.event.id, 3600.0)], error="InvalidArgument")
    assert envelope.event.id not in [
        r.event_id for r in await outbox.claim_due(limit=500, lease=timedelta(0))
    ]
    (row,) = await rows(pool, envelope)
    assert (row["attempts"], row["last_error"]) == (2, "InvalidArgument")

"""Stores events from the bus and re-publishes outbox rows that never arrived."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg
from postwire.internal.v1 import bus_pb2

from libs.bus import Bus, Outcome, Publication
from libs.coalesce import Coalescer
from libs.failures import dependency_failure
from libs.stage_retry import StageRetry
from libs.telemetry import current_trace_context
from services.events.event_metrics import count_stored
from services.events.store import Arrival, EventsStore
from services.events.stored_notices import StoredNotices
from services.events.suppression_rule import suppression_for

_log = logging.getLogger(__name__)
# Rows one sweep query claims; a sweep repeats the query until a claim comes back short.
SWEEP_CLAIM = 500
# Events stored per transaction: a fetch (64 handlers) and more when the database lags behind.
STORE_BATCH = 256
# After a fetch that came back short the consumer waits this long before the next (libs.bus): an
# event reaches its row, stream and webhook up to this much later, and the events of a message
# rate of a few hundred per second share a fetch, a statement and a socket write of acks instead
# of taking one each. Nothing on the send path waits for an event.
FETCH_LINGER_SECONDS = 0.05

__all__ = ["EventRecorder"]


class EventRecorder:
    def __init__(
        self,
        store: EventsStore,
        bus: Bus,
        notices: StoredNotices,
        *,
        stall: timedelta,
        retry: StageRetry | None = None,
    ) -> None:
        self._store = store
        # The handlers of one fetch meet here and share one transaction (~430 µs of client and
        # server CPU per event alone against ~50 µs in a batch of 64); each returns, and so is
        # acked, only after the transaction holding its event has committed.
        self._batches: Coalescer[Arrival, bool] = Coalescer(
            self._store_batch, max_batch=STORE_BATCH, outage=_outage
        )
        self._notices = notices
        self._announcing: set[asyncio.Task[None]] = set()
        self._bus = bus
        self._stall = stall
        self._retry = retry or StageRetry()

    async def handle(self, msg: Msg) -> Outcome:
        """Store the event with the others of its fetch in one transaction; the bus acks each
        message after this returns, so only after that commit."""
        envelope = bus_pb2.EventEnvelope.FromString(msg.data)
        arrival = Arrival(envelope, suppression_for(envelope), trace_context=current_trace_context())
        await self._batches.load(arrival)
        return Outcome.ACK

    async def _store_batch(self, arrivals: Sequence[Arrival]) -> list[bool]:
        """One transaction for the batch; then, before any of its handlers acks, one stored notice
        per tenant with a new event in it (a stream re-reads everything past its position on a
        notice, so one wakes it for the whole batch)."""
        fresh = await self._store.store_many(arrivals)
        tenants: set[str] = set()
        for arrival, new in zip(arrivals, fresh, strict=True):
            if new:
                count_stored(arrival.envelope.event)
                tenants.add(arrival.envelope.tenant_id)
        if tenants:
            # A task scheduled now runs just before the batch's handlers resume (the loop is
            # FIFO), so the notices join their acks in one socket write instead of one each.
            task = asyncio.create_task(self._announce(tenants), name="stored-notices")
            self._announcing.add(task)
            task.add_done_callback(self._announcing.discard)
        return fresh

    async def _announce(self, tenants: set[str]) -> None:
        for tenant_id in tenants:
            await self._notices.announce(tenant_id)

    # libs.bus.StageFailures: the count lives on the outbox row, which the sweeper re-publishes
    # with fresh ids; an event has no give-up time (it reports what already happened).

    async def unavailable(self, msg: Msg, delay: float) -> float | None:
        event_id = _event_id(msg)
        if event_id is None:
            return None
        await self._store.hold(event_id, seconds=delay)
        return delay

    async def failed(self, msg: Msg, reason: str) -> float | None:
        event_id = _event_id(msg)
        if event_id is None:
            return None
        failures = await self._store.count_failure(
            event_id, reason=reason, max_attempts=self._retry.max_attempts
        )
        if failures is None:
            # No outbox row (it was published again under a fresh id, or never had one): the
            # delivery count is all there is to go by.
            failures = int(msg.metadata.num_delivered)
        if self._retry.exhausted(failures):
            _log.error("event %s given up after %d attempts: %s", event_id, failures, reason)
            return None
        delay = self._retry.delay(failures)
        await self._store.hold(event_id, seconds=delay)
        return delay

    async def sweep(self) -> int:
        """Re-publish every lingering outbox row, batch after batch (see the router's sweep)."""
        total = 0
        while True:
            rows = await self._store.claim_lingering(stall=self._stall, limit=SWEEP_CLAIM)
            stamp = f"{datetime.now(UTC).timestamp():.0f}"
            # A fresh dedupe id: the stream may still remember the first one although it lost the
            # message (purged or restored store). The events table's unique event_id dedupes.
            total += await self._bus.publish_many(
                [
                    Publication(subject, payload, msg_id=f"{event_id}:{stamp}")
                    for event_id, subject, payload in rows
                ]
            )
            if len(rows) < SWEEP_CLAIM:
                return total


def _outage(exc: Exception) -> bool:
    # The database is down: the batch fails as a whole rather than event by event.
    return dependency_failure(exc) is not None


def _event_id(msg: Msg) -> str | None:
    """The event's id, from the payload or, for one that cannot be decoded, from the publish id
    (`<event id>` from the producer, `<event id>:<stamp>` from the sweeper), so even a corrupt
    outbox row is counted and retired instead of re-published forever."""
    try:
        event_id = bus_pb2.EventEnvelope.FromString(msg.data).event.id
    except Exception:
        event_id = ""
    if event_id:
        return event_id
    publish_id = (msg.headers or {}).get("Nats-Msg-Id", "")
    if not publish_id:
        _log.error("undecodable event without a publish id on %s dropped", msg.subject)
    return publish_id or None

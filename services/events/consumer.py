"""Stores events from the bus and re-publishes outbox rows that never arrived."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg
from postwire.internal.v1 import bus_pb2

from libs.bus import Bus, Outcome
from services.events.store import EventsStore

__all__ = ["EventRecorder"]


class EventRecorder:
    def __init__(self, store: EventsStore, bus: Bus, *, stall: timedelta) -> None:
        self._store = store
        self._bus = bus
        self._stall = stall

    async def handle(self, msg: Msg) -> Outcome:
        await self._store.store(bus_pb2.EventEnvelope.FromString(msg.data))
        return Outcome.ACK

    async def sweep(self) -> int:
        rows = await self._store.claim_lingering(stall=self._stall)
        stamp = f"{datetime.now(UTC).timestamp():.0f}"
        for event_id, subject, payload in rows:
            # A fresh dedupe id: the stream may still remember the first one although it lost the
            # message (purged or restored store). The events table's unique event_id dedupes.
            await self._bus.publish(subject, payload, msg_id=f"{event_id}:{stamp}")
        return len(rows)

"""GetMessage's timeline is in the order things happened, whatever order the events were stored
in (an ACCEPTED event can be stored after the DELIVERED one: its publish comes after the commit)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from postwire.internal.v1 import event_reader_service_pb2
from postwire.v1 import event_pb2

from services.events.reader import EventReader


class _Store:
    def __init__(self, rows: list[tuple[int, bytes]]) -> None:
        self.rows = rows

    async def query(self, query: Any) -> list[tuple[int, bytes]]:
        return self.rows


def _event(event_type: event_pb2.EventType.ValueType, at: datetime) -> bytes:
    event = event_pb2.Event(id=uuid.uuid4().hex, type=event_type)
    event.create_time.FromDatetime(at)
    return event.SerializeToString()


async def test_events_stored_out_of_order_come_back_oldest_first() -> None:
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    stored = [
        (1, _event(event_pb2.EVENT_TYPE_DELIVERED, t0 + timedelta(milliseconds=40))),
        (2, _event(event_pb2.EVENT_TYPE_ACCEPTED, t0)),
        (3, _event(event_pb2.EVENT_TYPE_BOUNCED, t0 + timedelta(days=1))),
    ]
    reader = EventReader(_Store(stored))
    answer = await reader.ListMessageEvents(
        event_reader_service_pb2.ListMessageEventsRequest(
            tenant_id=str(uuid.uuid4()), message_id=str(uuid.uuid4())
        ),
        None,  # type: ignore[arg-type]
    )
    assert [e.type for e in answer.events] == [
        event_pb2.EVENT_TYPE_ACCEPTED,
        event_pb2.EVENT_TYPE_DELIVERED,
        event_pb2.EVENT_TYPE_BOUNCED,
    ]

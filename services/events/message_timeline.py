"""A message's timeline for GetMessage (internal EventReaderService): its stored events in the
order things happened; no I/O of its own."""

from __future__ import annotations

import uuid
from typing import Protocol

from postwire.v1 import event_pb2

from libs.page_tokens import page_size
from services.events.event_query import EventQuery

__all__ = ["MAX_TIMELINE", "Reads", "message_timeline"]

# GetMessage's timeline holds at most this many events (the proto says so).
MAX_TIMELINE = 1000


class Reads(Protocol):
    async def query(self, q: EventQuery) -> list[tuple[int, bytes]]: ...


async def message_timeline(
    store: Reads, tenant_id: uuid.UUID, message_id: uuid.UUID, limit: int
) -> list[event_pb2.Event]:
    rows = await store.query(
        EventQuery(
            tenant_id=str(tenant_id),
            after_seq=0,
            limit=min(page_size(limit, default=MAX_TIMELINE), MAX_TIMELINE),
            message_id=message_id,
        )
    )
    # In the order things happened, not the order the events service stored them: the
    # ACCEPTED event can reach it after DELIVERED (its publish is after the commit, or the
    # sweeper's). sorted() is stable, so events of one instant keep their storage order.
    return sorted(
        (event_pb2.Event.FromString(payload) for _, payload in rows),
        key=lambda e: (e.create_time.seconds, e.create_time.nanos),
    )

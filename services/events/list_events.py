"""ListEvents: one page of a tenant's stored events, oldest first by storage order; no I/O of
its own (the store and the page cursor are given)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from libs.page_tokens import Cursor
from services.events.event_query import EventQuery
from services.events.pagination import page_size, sequence

__all__ = ["EventPage", "Reads", "list_events"]


class Reads(Protocol):
    async def query(self, q: EventQuery) -> list[tuple[int, bytes]]: ...


@dataclass(frozen=True, slots=True)
class EventPage:
    events: Sequence[bytes]  # stored postwire.v1.Event payloads
    next_page_token: str


async def list_events(store: Reads, query: EventQuery, cursor: Cursor, requested_size: int) -> EventPage:
    """`query` holds the filters (its after_seq and limit are set here from the cursor and the
    page size); INVALID_ARGUMENT on page_size or page_token before anything is read."""
    size = page_size(requested_size)
    after = cursor.parse(sequence) or 0
    rows = await store.query(replace(query, after_seq=after, limit=size + 1))
    page, token = cursor.page(rows, size, lambda row: str(row[0]))
    return EventPage([payload for _, payload in page], token)

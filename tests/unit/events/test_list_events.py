"""ListEvents' use case with a fake store: the page size and token are checked before anything is
read, one extra row is fetched to know whether another page follows, and the next page starts
after the last event sent."""

from __future__ import annotations

from dataclasses import replace

import pytest
from postwire.v1 import event_service_pb2

from libs.errors import InvalidArgument
from libs.page_tokens import PageTokens
from libs.token_keys import KeyRing
from services.events.event_query import EventQuery
from services.events.list_events import list_events

RING = KeyRing.parse("k1:" + "A" * 43)
QUERY = EventQuery(tenant_id="t", after_seq=0, limit=0)


class FakeStore:
    def __init__(self, seqs: list[int]) -> None:
        self.seqs = seqs
        self.queries: list[EventQuery] = []

    async def query(self, q: EventQuery) -> list[tuple[int, bytes]]:
        self.queries.append(q)
        return [(s, f"event {s}".encode()) for s in self.seqs if s > q.after_seq][: q.limit]


async def test_pages_follow_one_another_without_gaps_or_repeats() -> None:
    store = FakeStore([1, 2, 3])
    pages = PageTokens(RING)
    request = event_service_pb2.ListEventsRequest(page_size=2)
    first = await list_events(store, QUERY, pages.cursor(request, caller="t"), 2)
    assert first.events == [b"event 1", b"event 2"] and first.next_page_token
    assert store.queries[0] == replace(QUERY, limit=3)
    request.page_token = first.next_page_token
    second = await list_events(store, QUERY, pages.cursor(request, caller="t"), 2)
    assert second.events == [b"event 3"] and second.next_page_token == ""
    assert store.queries[1].after_seq == 2


async def test_a_negative_page_size_is_refused_before_the_store_is_read() -> None:
    store = FakeStore([1])
    cursor = PageTokens(RING).cursor(event_service_pb2.ListEventsRequest(), caller="t")
    with pytest.raises(InvalidArgument) as caught:
        await list_events(store, QUERY, cursor, -1)
    assert caught.value.violations[0][0] == "page_size" and store.queries == []

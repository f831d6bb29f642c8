"""StreamEvents' use case with fakes that record the order of its steps: the resume position is
checked before anything is subscribed or read, the notices are subscribed before the first read,
and a stream resumes exactly after its cursor."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from libs.errors import InvalidArgument, RateLimited
from services.events.event_query import EventQuery
from services.events.stream_events import EventStreams, Streamed, StreamRequest

TENANT = "t"
QUERY = EventQuery(tenant_id=TENANT, after_seq=0, limit=0)


class Stop(Exception):
    """Ends a test's stream where it would wait for the next notice."""


class FakeStore:
    def __init__(self, journal: list[str], seqs: list[int]) -> None:
        self.journal = journal
        self.seqs = seqs

    async def last_seq(self, tenant_id: str) -> int:
        self.journal.append("last_seq")
        return max(self.seqs, default=0)

    async def query(self, q: EventQuery) -> list[tuple[int, bytes]]:
        self.journal.append(f"query after {q.after_seq} up to {q.up_to_seq}")
        rows = [s for s in self.seqs if q.after_seq < s <= (q.up_to_seq or s)]
        return [(s, f"event {s}".encode()) for s in rows[: q.limit]]


class FakeWake:
    def __init__(self, journal: list[str], park: asyncio.Event | None) -> None:
        self.journal = journal
        self.park = park

    def clear(self) -> None:
        pass

    async def wait(self) -> None:
        self.journal.append("wait")
        if self.park is None:
            raise Stop
        self.park.set()
        await asyncio.Event().wait()  # a live stream with nothing new: until cancelled


class FakeNotices:
    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.park: asyncio.Event | None = None

    @contextlib.asynccontextmanager
    async def watch(self, tenant_id: str) -> AsyncIterator[FakeWake]:
        self.journal.append("watch")
        try:
            yield FakeWake(self.journal, self.park)
        finally:
            self.journal.append("unwatch")


class FakeCursors:
    def __init__(self, journal: list[str]) -> None:
        self.journal = journal

    def open(self, token: str, *, caller: str, filters: str) -> int:
        self.journal.append(f"open {token}")
        if not token.startswith(f"{caller}/{filters}/"):
            raise InvalidArgument([("cursor", "invalid")])
        return int(token.rsplit("/", 1)[1])

    def seal(self, seq: int, *, caller: str, filters: str) -> str:
        return f"{caller}/{filters}/{seq}"


class Fixture:
    def __init__(self, seqs: list[int], *, limit: int = 5, batch: int = 500) -> None:
        self.journal: list[str] = []
        self.notices = FakeNotices(self.journal)
        self.streams = EventStreams(
            FakeStore(self.journal, seqs),
            self.notices,
            FakeCursors(self.journal),
            max_streams_per_tenant=limit,
            batch=batch,
        )

    async def run(self, request: StreamRequest) -> list[Streamed]:
        got: list[Streamed] = []
        with pytest.raises(Stop):
            async for item in self.streams.stream(request):
                got.append(item)
        return got


async def test_a_bad_cursor_is_refused_before_anything_is_subscribed_or_read() -> None:
    f = Fixture([1, 2])
    with pytest.raises(InvalidArgument) as caught:
        await f.run(StreamRequest(QUERY, cursor="other/f/1", filters="f"))
    assert caught.value.violations[0][0] == "cursor"
    assert f.journal == ["open other/f/1"]


async def test_a_cursor_with_start_time_is_refused_before_it_is_even_opened() -> None:
    f = Fixture([1, 2])
    started = replace(QUERY, start_time=datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(InvalidArgument) as caught:
        await f.run(StreamRequest(started, cursor="t/f/1", filters="f"))
    assert caught.value.violations[0][0] == "cursor"
    assert f.journal == []


async def test_a_stream_resumes_after_its_cursor_subscribed_before_the_first_read() -> None:
    f = Fixture([1, 2, 3])
    got = await f.run(StreamRequest(QUERY, cursor="t/f/1", filters="f"))
    assert [(i.payload, i.cursor) for i in got] == [(b"event 2", "t/f/2"), (b"event 3", "t/f/3")]
    assert f.journal == ["open t/f/1", "watch", "last_seq", "query after 1 up to 3", "wait", "unwatch"]


async def test_without_cursor_or_start_time_only_new_events_are_sent() -> None:
    f = Fixture([1, 2, 3])
    assert await f.run(StreamRequest(QUERY, cursor="", filters="f")) == []
    assert f.journal == ["watch", "last_seq", "last_seq", "wait", "unwatch"]


async def test_start_time_replays_from_the_beginning_in_batches() -> None:
    f = Fixture([1, 2, 3], batch=2)
    started = replace(QUERY, start_time=datetime(2026, 1, 1, tzinfo=UTC))
    got = await f.run(StreamRequest(started, cursor="", filters="f"))
    assert [i.payload for i in got] == [b"event 1", b"event 2", b"event 3"]
    assert f.journal[:4] == ["watch", "last_seq", "query after 0 up to 3", "last_seq"]


async def test_the_tenants_stream_limit_is_checked_before_subscribing_and_freed_on_close() -> None:
    f = Fixture([1], limit=1)
    parked = f.notices.park = asyncio.Event()

    async def drain() -> None:
        async for _ in f.streams.stream(StreamRequest(QUERY, cursor="", filters="f")):
            pass

    live = asyncio.create_task(drain())
    await parked.wait()
    f.notices.park = None
    f.journal.clear()
    with pytest.raises(RateLimited):
        await f.run(StreamRequest(QUERY, cursor="", filters="f"))
    assert f.journal == []
    live.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await live
    assert await f.run(StreamRequest(QUERY, cursor="", filters="f")) == []

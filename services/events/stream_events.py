"""StreamEvents: a resumable live tail of a tenant's stored events; no I/O of its own (the store,
the stored-event notices and the cursor sealer are ports).

It reads PostgreSQL only, by seq: it replays past the cursor (or from start_time, or from the
newest event) and then waits for the recorder's stored notice (or a poll) to read again. Replay
and tail are the same query, so there is no hand-over where an event could be lost or sent twice;
migration 0017 makes a tenant's events visible in seq order, so reading past the last seq sent
never skips one committed late.

The steps, in order: the resume position is checked (before anything is read or subscribed), the
tenant's stream limit is taken, the notices are subscribed, and only then is the start read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from typing import Protocol

from libs.errors import InvalidArgument, RateLimited
from services.events.event_query import EventQuery

__all__ = ["STREAM_BATCH", "Cursors", "EventStreams", "Notices", "Reads", "StreamRequest", "Streamed", "Wake"]

# Rows one read of a stream fetches; a full batch is followed by another read at once.
STREAM_BATCH = 500


class Reads(Protocol):
    async def last_seq(self, tenant_id: str) -> int: ...
    async def query(self, q: EventQuery) -> list[tuple[int, bytes]]: ...


class Wake(Protocol):
    def clear(self) -> None: ...
    async def wait(self) -> None: ...


class Notices(Protocol):
    def watch(self, tenant_id: str) -> AbstractAsyncContextManager[Wake]: ...


class Cursors(Protocol):
    def open(self, token: str, *, caller: str, filters: str) -> int: ...
    def seal(self, seq: int, *, caller: str, filters: str) -> str: ...


@dataclass(frozen=True, slots=True)
class StreamRequest:
    # The filters (tenant, message, types, start_time); after_seq and limit are the stream's.
    query: EventQuery
    # A cursor from an earlier stream with the same filters, or "".
    cursor: str
    # Digest of the filters a cursor is bound to (services.events.stream_cursor.stream_filters).
    filters: str


@dataclass(frozen=True, slots=True)
class Streamed:
    payload: bytes  # the stored postwire.v1.Event
    cursor: str  # resumes the stream after this event


class EventStreams:
    def __init__(
        self,
        store: Reads,
        notices: Notices,
        cursors: Cursors,
        *,
        max_streams_per_tenant: int,
        batch: int = STREAM_BATCH,
    ) -> None:
        self._store = store
        self._notices = notices
        self._cursors = cursors
        self._max_streams = max_streams_per_tenant
        self._batch = batch
        self._open_streams: Counter[str] = Counter()

    async def stream(self, request: StreamRequest) -> AsyncIterator[Streamed]:
        tenant = request.query.tenant_id
        resume_after = self._resume_position(request)
        if self._open_streams[tenant] >= self._max_streams:
            raise RateLimited(
                f"at most {self._max_streams} concurrent event streams per tenant",
                retry_after=5.0,
                subject=f"tenant:{tenant}:event_streams",
            )
        self._open_streams[tenant] += 1
        try:
            # Subscribed before the first read: an event stored after that read wakes the stream.
            async with self._notices.watch(tenant) as wake:
                if resume_after is not None:
                    after = resume_after
                elif request.query.start_time is not None:
                    after = 0
                else:
                    after = await self._store.last_seq(tenant)
                query = replace(request.query, limit=self._batch)
                while True:
                    wake.clear()
                    # Read up to a horizon and then move past it even when no event matched the
                    # filters: a stream of rare types must not rescan everything since its last
                    # match on every wake.
                    horizon = await self._store.last_seq(tenant)
                    if horizon > after:
                        rows = await self._store.query(replace(query, after_seq=after, up_to_seq=horizon))
                        for seq, payload in rows:
                            after = seq
                            yield Streamed(
                                payload, self._cursors.seal(seq, caller=tenant, filters=request.filters)
                            )
                        if len(rows) == self._batch:
                            continue
                        after = horizon
                    await wake.wait()
        finally:
            self._open_streams[tenant] -= 1

    def _resume_position(self, request: StreamRequest) -> int | None:
        """The seq a cursor resumes after, None without one; INVALID_ARGUMENT on `cursor`."""
        if not request.cursor:
            return None
        if request.query.start_time is not None:
            raise InvalidArgument([("cursor", "a cursor resumes its stream; send it without start_time")])
        return self._cursors.open(request.cursor, caller=request.query.tenant_id, filters=request.filters)

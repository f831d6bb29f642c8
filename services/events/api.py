"""postwire.v1.EventService: queries over stored events and a resumable live tail.

StreamEvents reads PostgreSQL only, by seq: it replays past the cursor (or from start_time, or
from the newest event) and then waits for the recorder's stored notice (or a poll) to read again.
Replay and tail are the same query, so there is no hand-over where an event could be lost or
sent twice; migration 0017 makes a tenant's events visible in seq order, so reading past the last
seq sent never skips one committed late.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC

import grpc
from postwire.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc

from libs.errors import InvalidArgument, RateLimited
from libs.grpcx.auth import KeyResolver
from libs.page_tokens import PageTokens
from services.events.filters import event_types, optional_uuid
from services.events.pagination import page_size, sequence
from services.events.store import EventQuery, EventsStore
from services.events.stored_notices import StoredNotices
from services.events.stream_cursor import StreamCursors, stream_filters

# Rows one read of a stream fetches; a full batch is followed by another read at once.
STREAM_BATCH = 500


class EventApi(event_service_pb2_grpc.EventServiceServicer):
    def __init__(
        self,
        store: EventsStore,
        notices: StoredNotices,
        keys: KeyResolver,
        pages: PageTokens,
        cursors: StreamCursors,
        *,
        max_streams_per_tenant: int,
    ) -> None:
        self._store = store
        self._pages = pages
        self._cursors = cursors
        self._notices = notices
        self._keys = keys
        self._max_streams = max_streams_per_tenant
        self._open_streams: Counter[str] = Counter()

    async def ListEvents(
        self, request: event_service_pb2.ListEventsRequest, context: grpc.aio.ServicerContext
    ) -> event_service_pb2.ListEventsResponse:
        caller = await self._keys.resolve(context)
        caller.require("events:read")
        size = page_size(request.page_size)
        cursor = self._pages.cursor(request, caller=caller.tenant_id)
        query = EventQuery(
            tenant_id=caller.tenant_id,
            after_seq=cursor.parse(sequence) or 0,
            limit=size + 1,
            message_id=optional_uuid(request.message_id, field="message_id", what="a message id"),
            recipient=request.recipient or None,
            types=event_types(request.types),
            start_time=request.start_time.ToDatetime(tzinfo=UTC) if request.HasField("start_time") else None,
            end_time=request.end_time.ToDatetime(tzinfo=UTC) if request.HasField("end_time") else None,
        )
        rows = await self._store.query(query)
        page, token = cursor.page(rows, size, lambda row: str(row[0]))
        return event_service_pb2.ListEventsResponse(
            events=[event_pb2.Event.FromString(payload) for _, payload in page], next_page_token=token
        )

    async def StreamEvents(
        self, request: event_service_pb2.StreamEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[event_service_pb2.StreamEventsResponse]:
        caller = await self._keys.resolve(context)
        caller.require("events:read")
        tenant = caller.tenant_id
        filters = stream_filters(request)
        query = EventQuery(
            tenant_id=tenant,
            after_seq=0,
            limit=STREAM_BATCH,
            message_id=optional_uuid(request.message_id, field="message_id", what="a message id"),
            types=event_types(request.types),
            start_time=request.start_time.ToDatetime(tzinfo=UTC) if request.HasField("start_time") else None,
        )
        resume_after: int | None = None
        if request.cursor:
            if request.HasField("start_time"):
                raise InvalidArgument([("cursor", "a cursor resumes its stream; send it without start_time")])
            resume_after = self._cursors.open(request.cursor, caller=tenant, filters=filters)
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
                elif query.start_time is not None:
                    after = 0
                else:
                    after = await self._store.last_seq(tenant)
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
                            yield event_service_pb2.StreamEventsResponse(
                                event=event_pb2.Event.FromString(payload),
                                cursor=self._cursors.seal(seq, caller=tenant, filters=filters),
                            )
                        if len(rows) == STREAM_BATCH:
                            continue
                        after = horizon
                    await wake.wait()
        finally:
            self._open_streams[tenant] -= 1

"""postwire.v1.EventService: translates proto <-> services.events.list_events and
services.events.stream_events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2
from postwire.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc

from libs.grpcx.auth import Context, KeyResolver
from libs.page_tokens import PageTokens
from services.events.event_query import EventQuery
from services.events.filters import event_types, optional_uuid
from services.events.list_events import Reads, list_events
from services.events.stream_cursor import stream_filters
from services.events.stream_events import EventStreams, StreamRequest

__all__ = ["EventApi"]


def _time(stamp: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if present else None


class EventApi(event_service_pb2_grpc.EventServiceServicer):
    def __init__(self, store: Reads, streams: EventStreams, keys: KeyResolver, pages: PageTokens) -> None:
        self._store = store
        self._streams = streams
        self._keys = keys
        self._pages = pages

    async def ListEvents(
        self, request: event_service_pb2.ListEventsRequest, context: Context
    ) -> event_service_pb2.ListEventsResponse:
        caller = await self._keys.authorize(context, "events:read")
        query = EventQuery(
            tenant_id=caller.tenant_id,
            after_seq=0,
            limit=0,
            message_id=optional_uuid(request.message_id, field="message_id", what="a message id"),
            recipient=request.recipient or None,
            types=event_types(request.types),
            start_time=_time(request.start_time, request.HasField("start_time")),
            end_time=_time(request.end_time, request.HasField("end_time")),
        )
        cursor = self._pages.cursor(request, caller=caller.tenant_id)
        page = await list_events(self._store, query, cursor, request.page_size)
        return event_service_pb2.ListEventsResponse(
            events=[event_pb2.Event.FromString(payload) for payload in page.events],
            next_page_token=page.next_page_token,
        )

    async def StreamEvents(
        self, request: event_service_pb2.StreamEventsRequest, context: Context
    ) -> AsyncIterator[event_service_pb2.StreamEventsResponse]:
        caller = await self._keys.authorize(context, "events:read")
        query = EventQuery(
            tenant_id=caller.tenant_id,
            after_seq=0,
            limit=0,
            message_id=optional_uuid(request.message_id, field="message_id", what="a message id"),
            types=event_types(request.types),
            start_time=_time(request.start_time, request.HasField("start_time")),
        )
        opened = StreamRequest(query, cursor=request.cursor, filters=stream_filters(request))
        async for item in self._streams.stream(opened):
            yield event_service_pb2.StreamEventsResponse(
                event=event_pb2.Event.FromString(item.payload), cursor=item.cursor
            )

"""postwire.internal.v1.EventReaderService: stored events for other services (GetMessage's timeline)."""

from __future__ import annotations

import grpc
from postwire.internal.v1 import event_reader_service_pb2, event_reader_service_pb2_grpc
from postwire.v1 import event_pb2

from libs.errors import InvalidArgument
from libs.page_tokens import page_size
from services.events.filters import optional_uuid
from services.events.store import EventQuery, EventsStore

# GetMessage's timeline holds at most this many events (the proto says so).
MAX_TIMELINE = 1000


class EventReader(event_reader_service_pb2_grpc.EventReaderServiceServicer):
    def __init__(self, store: EventsStore) -> None:
        self._store = store

    async def ListMessageEvents(
        self, request: event_reader_service_pb2.ListMessageEventsRequest, context: grpc.aio.ServicerContext
    ) -> event_reader_service_pb2.ListMessageEventsResponse:
        # The internal token was checked by the interceptor; the tenant scope is this query's.
        tenant = optional_uuid(request.tenant_id, field="tenant_id", what="a tenant id")
        message_id = optional_uuid(request.message_id, field="message_id", what="a message id")
        if tenant is None or message_id is None:
            raise InvalidArgument(
                [
                    (name, "required")
                    for name, value in (("tenant_id", tenant), ("message_id", message_id))
                    if not value
                ]
            )
        rows = await self._store.query(
            EventQuery(
                tenant_id=str(tenant),
                after_seq=0,
                limit=min(page_size(request.limit, default=MAX_TIMELINE), MAX_TIMELINE),
                message_id=message_id,
            )
        )
        # In the order things happened, not the order the events service stored them: the
        # ACCEPTED event can reach it after DELIVERED (its publish is after the commit, or the
        # sweeper's). sorted() is stable, so events of one instant keep their storage order.
        events = sorted(
            (event_pb2.Event.FromString(payload) for _, payload in rows),
            key=lambda e: (e.create_time.seconds, e.create_time.nanos),
        )
        return event_reader_service_pb2.ListMessageEventsResponse(events=events)

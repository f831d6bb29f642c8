"""postwire.v1.EventService: queries over stored events and a live tail from JetStream."""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC

import grpc
from nats.js.api import ConsumerConfig, DeliverPolicy
from postwire.internal.v1 import bus_pb2
from postwire.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc

from libs.bus import Bus, event_subject
from libs.errors import InvalidArgument, RateLimited
from libs.grpcx.auth import KeyResolver
from libs.page_tokens import PageTokens
from services.events.pagination import page_size, sequence
from services.events.store import EventQuery, EventsStore


class EventApi(event_service_pb2_grpc.EventServiceServicer):
    def __init__(
        self,
        store: EventsStore,
        bus: Bus,
        keys: KeyResolver,
        pages: PageTokens,
        *,
        max_streams_per_tenant: int,
    ) -> None:
        self._store = store
        self._pages = pages
        self._bus = bus
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
        message_id = None
        if request.message_id:
            try:
                message_id = uuid.UUID(request.message_id)
            except ValueError:
                raise InvalidArgument([("message_id", "not a message id")]) from None
        query = EventQuery(
            tenant_id=caller.tenant_id,
            after_seq=cursor.parse(sequence) or 0,
            limit=size + 1,
            message_id=message_id,
            recipient=request.recipient or None,
            types=list(request.types),
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
        if self._open_streams[tenant] >= self._max_streams:
            raise RateLimited(
                f"at most {self._max_streams} concurrent event streams per tenant",
                retry_after=5.0,
                subject=f"tenant:{tenant}:event_streams",
            )
        types = set(request.types)
        if request.HasField("start_time"):
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME,
                opt_start_time=request.start_time.ToDatetime(tzinfo=UTC).isoformat(),
            )
        else:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
        self._open_streams[tenant] += 1
        # The subject carries the tenant id, so the server never sends another tenant's events here.
        sub = await self._bus.js.subscribe(event_subject(tenant, "*"), ordered_consumer=True, config=config)
        try:
            async for msg in sub.messages:
                envelope = bus_pb2.EventEnvelope.FromString(msg.data)
                event = envelope.event
                if envelope.tenant_id != tenant:
                    continue
                if request.message_id and event.message_id != request.message_id:
                    continue
                if types and event.type not in types:
                    continue
                yield event_service_pb2.StreamEventsResponse(event=event)
        finally:
            self._open_streams[tenant] -= 1
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

"""postwire.internal.v1.EventReaderService: translates proto <-> services.events.message_timeline."""

from __future__ import annotations

from postwire.internal.v1 import event_reader_service_pb2 as pb
from postwire.internal.v1 import event_reader_service_pb2_grpc

from libs.errors import InvalidArgument
from libs.grpcx.auth import Context
from services.events.filters import optional_uuid
from services.events.message_timeline import Reads, message_timeline

__all__ = ["EventReader"]


class EventReader(event_reader_service_pb2_grpc.EventReaderServiceServicer):
    def __init__(self, store: Reads) -> None:
        self._store = store

    async def ListMessageEvents(
        self, request: pb.ListMessageEventsRequest, context: Context
    ) -> pb.ListMessageEventsResponse:
        # The internal token was checked by the interceptor; the tenant scope is this query's.
        tenant = optional_uuid(request.tenant_id, field="tenant_id", what="a tenant id")
        message_id = optional_uuid(request.message_id, field="message_id", what="a message id")
        if tenant is None or message_id is None:
            missing = (("tenant_id", tenant), ("message_id", message_id))
            raise InvalidArgument([(name, "required") for name, value in missing if value is None])
        events = await message_timeline(self._store, tenant, message_id, request.limit)
        return pb.ListMessageEventsResponse(events=events)

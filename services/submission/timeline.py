"""GetMessage's timeline: the message's events, asked of the events service (submission never
reads the events tables)."""

from __future__ import annotations

import grpc
from postwire.internal.v1 import event_reader_service_pb2, event_reader_service_pb2_grpc
from postwire.v1 import event_pb2

from libs.grpcx.status import error_from_rpc

__all__ = ["TIMELINE_LIMIT", "EventsTimeline", "read_timeline"]

TIMELINE_LIMIT = 1000
# A GetMessage is interactive: better UNAVAILABLE soon than a caller's deadline spent waiting.
_TIMEOUT_SECONDS = 5.0


async def read_timeline(
    reader: event_reader_service_pb2_grpc.EventReaderServiceAsyncStub, *, tenant_id: str, message_id: str
) -> list[event_pb2.Event]:
    """Oldest first. Without the events service this raises UNAVAILABLE (with RetryInfo) rather
    than answer an empty timeline, which would read as "nothing happened to this message"."""
    try:
        answer = await reader.ListMessageEvents(
            event_reader_service_pb2.ListMessageEventsRequest(
                tenant_id=tenant_id, message_id=message_id, limit=TIMELINE_LIMIT
            ),
            timeout=_TIMEOUT_SECONDS,
        )
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc, what="the events service") from None
    return list(answer.events)


class EventsTimeline:
    """The GetMessage use case's Timeline port."""

    def __init__(self, reader: event_reader_service_pb2_grpc.EventReaderServiceAsyncStub) -> None:
        self._reader = reader

    async def read(self, *, tenant_id: str, message_id: str) -> list[event_pb2.Event]:
        return await read_timeline(self._reader, tenant_id=tenant_id, message_id=message_id)

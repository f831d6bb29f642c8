"""GetMessage's use case: the caller's message, with its timeline from the events service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from postwire.v1 import event_pb2

from libs.errors import NotFound
from services.submission.messages import MessageRow

__all__ = ["GetMessage", "MessageReader", "MessageView", "Timeline"]


class MessageReader(Protocol):
    async def get(self, tenant_id: str, message_id: str) -> MessageRow | None:
        """None for an unknown id, a malformed one, or another tenant's message alike."""
        ...


class Timeline(Protocol):
    async def read(self, *, tenant_id: str, message_id: str) -> list[event_pb2.Event]:
        """Oldest first; raises UNAVAILABLE rather than answer an empty timeline."""
        ...


@dataclass(frozen=True, slots=True)
class MessageView:
    message: MessageRow
    timeline: list[event_pb2.Event]


class GetMessage:
    def __init__(self, *, store: MessageReader, timeline: Timeline) -> None:
        self._store = store
        self._timeline = timeline

    async def get(self, tenant_id: str, message_id: str) -> MessageView:
        row = await self._store.get(tenant_id, message_id)
        if row is None:
            # The same answer for another tenant's id, so ids cannot be probed.
            raise NotFound(f"message '{message_id}' not found")
        timeline = await self._timeline.read(tenant_id=tenant_id, message_id=row.id)
        return MessageView(message=row, timeline=timeline)

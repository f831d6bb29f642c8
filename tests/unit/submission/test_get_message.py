"""The GetMessage use case with hand-written fakes: an unknown id is NOT_FOUND before any timeline read."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from postwire.v1 import event_pb2

from libs.errors import NotFound
from services.submission.get_message import GetMessage, MessageView
from services.submission.messages import MessageRow

TENANT = "00000000-0000-0000-0000-00000000000a"
ROW = MessageRow(
    id="m-1",
    request=b"",
    request_hash=b"",
    stream="transactional",
    create_time=datetime(2026, 6, 1, tzinfo=UTC),
    send_time=None,
    rfc822_message_id=None,
    recipients=[],
)


@dataclass
class Fakes:
    rows: dict[tuple[str, str], MessageRow] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    events: list[event_pb2.Event] = field(default_factory=lambda: [event_pb2.Event(id="e-1")])

    async def get(self, tenant_id: str, message_id: str) -> MessageRow | None:
        self.steps.append("get")
        return self.rows.get((tenant_id, message_id))

    async def read(self, *, tenant_id: str, message_id: str) -> list[event_pb2.Event]:
        self.steps.append(f"timeline {tenant_id} {message_id}")
        return self.events


async def test_a_message_comes_with_its_timeline() -> None:
    fakes = Fakes(rows={(TENANT, "m-1"): ROW})

    view = await GetMessage(store=fakes, timeline=fakes).get(TENANT, "m-1")

    assert view == MessageView(message=ROW, timeline=fakes.events)
    assert fakes.steps == ["get", f"timeline {TENANT} m-1"]


async def test_another_tenants_message_is_not_found_and_its_timeline_never_read() -> None:
    fakes = Fakes(rows={("another-tenant", "m-1"): ROW})

    with pytest.raises(NotFound):
        await GetMessage(store=fakes, timeline=fakes).get(TENANT, "m-1")

    assert fakes.steps == ["get"]

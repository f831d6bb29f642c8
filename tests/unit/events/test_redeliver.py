"""RedeliverWebhookEvent's use case with a fake store: the event id is required, the webhook must
be the tenant's and enabled, and only then is the delivery made due."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from libs.errors import FailedPrecondition, InvalidArgument, NotFound
from services.events.kinds import DeliveryState, EventType
from services.events.redeliver import redeliver
from services.events.webhook_records import DeliveryRow, WebhookRow

NOW = datetime(2026, 1, 1, tzinfo=UTC)
HOOK = uuid.uuid4()


class FakeStore:
    def __init__(self, *, enabled: bool = True) -> None:
        self.hook = WebhookRow(
            str(HOOK), "https://h.example/", (EventType.DELIVERED,), (), (), enabled, "410", NOW
        )
        self.redelivered: list[str] = []

    async def get(self, tenant_id: str, webhook_id: uuid.UUID) -> WebhookRow | None:
        return self.hook if (tenant_id, webhook_id) == ("t", HOOK) else None

    async def redeliver(self, tenant_id: str, webhook_id: uuid.UUID, event_id: str) -> DeliveryRow | None:
        self.redelivered.append(event_id)
        if event_id != "e1":
            return None
        return DeliveryRow("e1", EventType.DELIVERED, DeliveryState.PENDING, 0, 0, "", 0, None, NOW, NOW)


async def test_an_enabled_webhook_gets_the_event_again_pending() -> None:
    store = FakeStore()
    row = await redeliver(store, "t", HOOK, "e1")
    assert row.state == DeliveryState.PENDING and store.redelivered == ["e1"]


async def test_nothing_is_queued_without_an_event_id_another_tenants_webhook_or_a_disabled_one() -> None:
    store = FakeStore()
    with pytest.raises(InvalidArgument) as caught:
        await redeliver(store, "t", HOOK, "")
    assert caught.value.violations == [("event_id", "required")]
    with pytest.raises(NotFound):
        await redeliver(store, "other", HOOK, "e1")
    disabled = FakeStore(enabled=False)
    with pytest.raises(FailedPrecondition):
        await redeliver(disabled, "t", HOOK, "e1")
    assert store.redelivered == [] and disabled.redelivered == []


async def test_an_unknown_event_is_not_found() -> None:
    with pytest.raises(NotFound):
        await redeliver(FakeStore(), "t", HOOK, "nope")

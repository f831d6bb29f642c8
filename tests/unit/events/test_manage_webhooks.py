"""WebhookCatalog with simple fakes: refused destinations and bad fields name the field, the
secret leaves only through create and rotate, other tenants' webhooks are not found."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from postwire.v1 import event_pb2

from libs.errors import FailedPrecondition, InvalidArgument, NotFound
from services.events.manage_webhooks import WebhookCatalog
from services.events.webhook_records import WebhookRow
from services.events.webhook_rules import WebhookSpec

DELIVERED = event_pb2.EVENT_TYPE_DELIVERED
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeStore:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], WebhookRow] = {}
        self.sealed: dict[str, str] = {}

    async def create(
        self, tenant_id: str, webhook_id: str, spec: WebhookSpec, sealed_secret: str
    ) -> WebhookRow:
        row = WebhookRow(webhook_id, spec.url, spec.event_types, spec.streams, spec.tags, True, "", NOW)
        self.rows[(tenant_id, webhook_id)] = row
        self.sealed[webhook_id] = sealed_secret
        return row

    async def get(self, tenant_id: str, webhook_id: uuid.UUID) -> WebhookRow | None:
        return self.rows.get((tenant_id, str(webhook_id)))

    async def rotate(
        self, tenant_id: str, webhook_id: uuid.UUID, sealed: str, overlap: timedelta
    ) -> datetime | None:
        if (tenant_id, str(webhook_id)) not in self.rows:
            return None
        self.sealed[str(webhook_id)] = sealed
        return NOW + overlap


class FakeSecrets:
    def new(self, webhook_id: str) -> tuple[str, str]:
        return f"whsec_{webhook_id[:4]}", f"sealed:{webhook_id}"


async def _refuse_10(url: str) -> str | None:
    return "resolves to a private address" if "10." in url else None


def _catalog(store: FakeStore) -> WebhookCatalog:
    return WebhookCatalog(store, FakeSecrets(), _refuse_10, allow_plain_http=False)  # type: ignore[arg-type]


async def test_a_refused_destination_is_invalid_argument_on_webhook_url() -> None:
    with pytest.raises(InvalidArgument) as caught:
        await _catalog(FakeStore()).create("t", WebhookSpec("https://10.0.0.1/", (DELIVERED,)))
    assert [f for f, _ in caught.value.violations] == ["webhook.url"]


async def test_the_secret_is_shown_once_and_stored_sealed() -> None:
    store = FakeStore()
    row, secret = await _catalog(store).create("t", WebhookSpec("https://hooks.example/", (DELIVERED,)))
    assert secret.startswith("whsec_") and store.sealed[row.id] == f"sealed:{row.id}"
    assert secret not in repr(row)


async def test_other_tenants_get_not_found_and_limits_name_their_field() -> None:
    store = FakeStore()
    catalog = _catalog(store)
    row, _ = await catalog.create("t", WebhookSpec("https://hooks.example/", (DELIVERED,)))
    with pytest.raises(NotFound):
        await catalog.get("other", uuid.UUID(row.id))
    with pytest.raises(NotFound):
        await catalog.rotate("other", uuid.UUID(row.id), None)
    with pytest.raises(InvalidArgument) as caught:
        await catalog.rotate("t", uuid.UUID(row.id), timedelta(days=8))
    assert caught.value.violations[0][0] == "overlap"
    with pytest.raises(InvalidArgument) as caught:
        await catalog.update("t", uuid.UUID(row.id), WebhookSpec("", (), fields=frozenset()))
    assert caught.value.violations[0][0] == "update_mask"


async def test_redelivery_to_a_disabled_webhook_is_a_failed_precondition() -> None:
    store = FakeStore()
    catalog = _catalog(store)
    row, _ = await catalog.create("t", WebhookSpec("https://hooks.example/", (DELIVERED,)))
    store.rows[("t", row.id)] = WebhookRow(row.id, row.url, row.event_types, (), (), False, "410", NOW)
    with pytest.raises(FailedPrecondition):
        await catalog.redeliver("t", uuid.UUID(row.id), "e1")

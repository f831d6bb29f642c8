"""WebhookCatalog with simple fakes: the steps of create in order (validate → check the URL's
addresses → store with a sealed secret → the secret once), refused destinations and bad fields
name the field, a request_id replays the first answer, other tenants' webhooks are not found."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from postwire.v1 import event_pb2, webhook_service_pb2

from libs.errors import AlreadyExists, InvalidArgument, NotFound
from libs.page_tokens import Cursor, PageTokens
from libs.request_ids import RequestId
from libs.token_keys import KeyRing
from services.events.kinds import DeliveryState
from services.events.manage_webhooks import WebhookCatalog
from services.events.webhook_records import DeliveryRow, WebhookRow
from services.events.webhook_rules import WebhookSpec

DELIVERED = event_pb2.EVENT_TYPE_DELIVERED
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeStore:
    """Keeps rows in dicts; `answers` stands for the request_ids table (sealed answers)."""

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.rows: dict[tuple[str, str], WebhookRow] = {}
        self.sealed: dict[str, str] = {}
        self.answers: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        self.delivery_states: list[DeliveryState | None] = []

    async def answered(self, request_id: RequestId, unseal: Callable[[bytes], bytes]) -> bytes | None:
        self.journal.append("replay lookup")
        found = self.answers.get((request_id.owner, request_id.value))
        if found is None:
            return None
        if found[0] != request_id.fingerprint:
            raise AlreadyExists("used", field="request_id")
        return unseal(found[1])

    async def create(
        self,
        tenant_id: str,
        webhook_id: str,
        spec: WebhookSpec,
        sealed_secret: str,
        *,
        request_id: RequestId | None,
        answer: Callable[[WebhookRow], bytes],
        seal: Callable[[bytes], bytes],
        unseal: Callable[[bytes], bytes],
    ) -> bytes:
        self.journal.append("store")
        if request_id is not None:
            key = (request_id.owner, request_id.value)
            if key in self.answers:
                fingerprint, sealed = self.answers[key]
                if fingerprint != request_id.fingerprint:
                    raise AlreadyExists("used", field="request_id")
                return unseal(sealed)
        row = WebhookRow(webhook_id, spec.url, spec.event_types, spec.streams, spec.tags, True, "", NOW)
        self.rows[(tenant_id, webhook_id)] = row
        self.sealed[webhook_id] = sealed_secret
        out = answer(row)
        if request_id is not None:
            self.answers[(request_id.owner, request_id.value)] = (request_id.fingerprint, seal(out))
        return out

    async def get(self, tenant_id: str, webhook_id: uuid.UUID) -> WebhookRow | None:
        return self.rows.get((tenant_id, str(webhook_id)))

    async def page(self, tenant_id: str, after: object, limit: int) -> list[WebhookRow]:
        return [row for (tenant, _), row in self.rows.items() if tenant == tenant_id][:limit]

    async def update(self, tenant_id: str, webhook_id: uuid.UUID, spec: WebhookSpec) -> WebhookRow | None:
        self.journal.append(f"update {sorted(spec.fields)}")
        return self.rows.get((tenant_id, str(webhook_id)))

    async def delete(self, tenant_id: str, webhook_id: uuid.UUID) -> bool:
        return self.rows.pop((tenant_id, str(webhook_id)), None) is not None

    async def rotate(
        self, tenant_id: str, webhook_id: uuid.UUID, sealed_secret: str, overlap: timedelta
    ) -> datetime | None:
        if (tenant_id, str(webhook_id)) not in self.rows:
            return None
        self.sealed[str(webhook_id)] = sealed_secret
        return NOW + overlap

    async def deliveries(
        self,
        tenant_id: str,
        webhook_id: uuid.UUID,
        *,
        state: DeliveryState | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[DeliveryRow]:
        self.delivery_states.append(state)
        return []


class FakeSecrets:
    def __init__(self, journal: list[str]) -> None:
        self.journal = journal

    def new(self, webhook_id: str) -> tuple[str, str]:
        self.journal.append("new secret")
        return f"whsec_{webhook_id[:4]}", f"sealed:{webhook_id}"

    def seal_answer(self, answer: bytes, bound_to: str) -> bytes:
        return b"sealed:" + bound_to.encode() + b":" + answer[::-1]

    def open_answer(self, sealed: bytes, bound_to: str) -> bytes:
        prefix = b"sealed:" + bound_to.encode() + b":"
        assert sealed.startswith(prefix)
        return sealed.removeprefix(prefix)[::-1]


def _answer(row: WebhookRow, secret: str) -> bytes:
    return f"{row.id}|{secret}".encode()


class Fixture:
    def __init__(self) -> None:
        self.journal: list[str] = []
        self.store = FakeStore(self.journal)
        self.secrets = FakeSecrets(self.journal)
        self.catalog = WebhookCatalog(self.store, self.secrets, self.check_url, allow_plain_http=False)

    async def check_url(self, url: str) -> str | None:
        self.journal.append(f"check {url}")
        return "resolves to a private address" if "10." in url else None

    async def create(self, spec: WebhookSpec, request_id: RequestId | None = None) -> tuple[str, str]:
        webhook_id, secret = (await self.catalog.create("t", spec, request_id, _answer)).decode().split("|")
        return webhook_id, secret


def _cursor() -> Cursor:
    return PageTokens(KeyRing.parse("k1:" + "A" * 43)).cursor(
        webhook_service_pb2.ListWebhookDeliveriesRequest(), caller="t"
    )


HOOK = WebhookSpec("https://hooks.example/", (DELIVERED,))


def _request_id(value: str, url: str) -> RequestId | None:
    request = webhook_service_pb2.CreateWebhookRequest(
        webhook=webhook_service_pb2.Webhook(url=url, event_types=[DELIVERED]), request_id=value
    )
    return RequestId.of("t", "CreateWebhook", request)


async def test_create_validates_then_checks_the_address_then_stores_with_a_sealed_secret() -> None:
    f = Fixture()
    webhook_id, secret = await f.create(HOOK)
    assert f.journal == ["check https://hooks.example/", "new secret", "store"]
    assert secret.startswith("whsec_") and f.store.sealed[webhook_id] == f"sealed:{webhook_id}"
    assert secret not in repr(f.store.rows[("t", webhook_id)])


async def test_bad_fields_are_refused_before_the_address_is_looked_up() -> None:
    f = Fixture()
    with pytest.raises(InvalidArgument) as caught:
        await f.create(WebhookSpec("http://hooks.example/", (event_pb2.EVENT_TYPE_OPENED,)))
    assert [field for field, _ in caught.value.violations] == ["webhook.url", "webhook.event_types[0]"]
    assert f.journal == []


async def test_a_refused_destination_is_invalid_argument_on_webhook_url_and_nothing_is_stored() -> None:
    f = Fixture()
    with pytest.raises(InvalidArgument) as caught:
        await f.create(WebhookSpec("https://10.0.0.1/", (DELIVERED,)))
    assert [field for field, _ in caught.value.violations] == ["webhook.url"]
    assert f.journal == ["check https://10.0.0.1/"] and f.store.rows == {}


async def test_a_repeated_request_id_returns_the_first_answer_sealed_at_rest_and_stores_nothing() -> None:
    f = Fixture()
    rid = _request_id("r-1", HOOK.url)
    first = await f.create(HOOK, rid)
    assert all(first[1].encode() not in sealed for _, sealed in f.store.answers.values())
    assert await f.create(HOOK, rid) == first
    assert len(f.store.rows) == 1
    with pytest.raises(AlreadyExists):
        await f.create(
            WebhookSpec("https://other.example/", (DELIVERED,)), _request_id("r-1", "https://other.example/")
        )
    assert len(f.store.rows) == 1


async def test_a_retry_is_answered_before_the_url_is_checked_again() -> None:
    f = Fixture()
    rid = _request_id("r-2", HOOK.url)
    first = await f.create(HOOK, rid)
    f.journal.clear()
    assert await f.create(HOOK, rid) == first
    assert f.journal == ["replay lookup"]


async def test_update_checks_the_mask_before_the_fields_and_sets_only_what_it_names() -> None:
    f = Fixture()
    webhook_id, _ = await f.create(HOOK)
    f.journal.clear()
    with pytest.raises(InvalidArgument) as caught:
        await f.catalog.update("t", uuid.UUID(webhook_id), HOOK, ["url", "secret"])
    assert [field for field, _ in caught.value.violations] == ["update_mask.paths[1]"]
    with pytest.raises(InvalidArgument) as caught:
        await f.catalog.update("t", uuid.UUID(webhook_id), HOOK, [])
    assert [field for field, _ in caught.value.violations] == ["update_mask"]
    assert f.journal == []
    await f.catalog.update("t", uuid.UUID(webhook_id), WebhookSpec("", (), enabled=False), ["enabled"])
    assert f.journal == ["update ['enabled']"]


async def test_other_tenants_get_not_found_and_limits_name_their_field() -> None:
    f = Fixture()
    webhook_id = uuid.UUID((await f.create(HOOK))[0])
    with pytest.raises(NotFound):
        await f.catalog.get("other", webhook_id)
    with pytest.raises(NotFound):
        await f.catalog.rotate("other", webhook_id, None)
    with pytest.raises(NotFound):
        await f.catalog.deliveries("other", webhook_id, 0, _cursor(), 10)
    with pytest.raises(InvalidArgument) as caught:
        await f.catalog.rotate("t", webhook_id, timedelta(days=8))
    assert caught.value.violations[0][0] == "overlap"


async def test_the_delivery_state_filter_is_the_enum_and_an_unknown_one_is_invalid() -> None:
    f = Fixture()
    webhook_id = uuid.UUID((await f.create(HOOK))[0])
    await f.catalog.deliveries("t", webhook_id, 3, _cursor(), 10)
    await f.catalog.deliveries("t", webhook_id, 0, _cursor(), 10)
    assert f.store.delivery_states == [DeliveryState.DEAD_LETTERED, None]
    with pytest.raises(InvalidArgument) as caught:
        await f.catalog.deliveries("t", webhook_id, 9, _cursor(), 10)
    assert caught.value.violations[0][0] == "state"

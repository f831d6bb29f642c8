"""Use cases of WebhookService: validate, check the destination, store; secrets are made here
and leave only in the answers to create and rotate. No I/O of its own: the store, the secret
sealer and the destination check are ports."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from libs.errors import FailedPrecondition, InvalidArgument, NotFound
from services.events.webhook_records import DeliveryRow, WebhookRow
from services.events.webhook_rules import DEFAULT_OVERLAP, MAX_OVERLAP, WebhookSpec, spec_violations

__all__ = ["CheckUrl", "WebhookCatalog", "parse_id"]

# Why the destination of `url` is refused (a private address, a name that does not resolve…),
# or None when it may be called.
CheckUrl = Callable[[str], Awaitable[str | None]]


class Store(Protocol):
    async def create(
        self, tenant_id: str, webhook_id: str, spec: WebhookSpec, sealed_secret: str
    ) -> WebhookRow: ...
    async def get(self, tenant_id: str, webhook_id: uuid.UUID) -> WebhookRow | None: ...
    async def page(
        self, tenant_id: str, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[WebhookRow]: ...
    async def update(self, tenant_id: str, webhook_id: uuid.UUID, spec: WebhookSpec) -> WebhookRow | None: ...
    async def delete(self, tenant_id: str, webhook_id: uuid.UUID) -> bool: ...
    async def rotate(
        self, tenant_id: str, webhook_id: uuid.UUID, sealed_secret: str, overlap: timedelta
    ) -> datetime | None: ...
    async def deliveries(
        self,
        tenant_id: str,
        webhook_id: uuid.UUID,
        *,
        state: int,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[DeliveryRow]: ...
    async def redeliver(self, tenant_id: str, webhook_id: uuid.UUID, event_id: str) -> DeliveryRow | None: ...


class Secrets(Protocol):
    def new(self, webhook_id: str) -> tuple[str, str]: ...


def parse_id(value: str, field: str) -> uuid.UUID:
    if not value:
        raise InvalidArgument([(field, "required")])
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument([(field, "not a webhook id")]) from None


def _not_found(webhook_id: uuid.UUID) -> NotFound:
    # The same answer for a webhook that never existed and another tenant's.
    return NotFound(f"webhook {webhook_id} not found")


class WebhookCatalog:
    def __init__(
        self, store: Store, secrets: Secrets, check_url: CheckUrl, *, allow_plain_http: bool
    ) -> None:
        self._store = store
        self._secrets = secrets
        self._check_url = check_url
        self._plain_http = allow_plain_http

    async def _validate(self, spec: WebhookSpec) -> None:
        violations = spec_violations(spec, allow_plain_http=self._plain_http)
        if violations:
            raise InvalidArgument(violations)
        if "url" in spec.fields:
            refused = await self._check_url(spec.url)
            if refused:
                raise InvalidArgument([("webhook.url", f"refused destination: {refused}")])

    async def create(self, tenant_id: str, spec: WebhookSpec) -> tuple[WebhookRow, str]:
        """The stored webhook and its secret (shown once)."""
        await self._validate(spec)
        webhook_id = str(uuid.uuid4())
        secret, sealed = self._secrets.new(webhook_id)
        return await self._store.create(tenant_id, webhook_id, spec, sealed), secret

    async def get(self, tenant_id: str, webhook_id: uuid.UUID) -> WebhookRow:
        row = await self._store.get(tenant_id, webhook_id)
        if row is None:
            raise _not_found(webhook_id)
        return row

    async def page(
        self, tenant_id: str, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[WebhookRow]:
        return await self._store.page(tenant_id, after, limit)

    async def update(self, tenant_id: str, webhook_id: uuid.UUID, spec: WebhookSpec) -> WebhookRow:
        if not spec.fields:
            raise InvalidArgument(
                [("update_mask", "name at least one of url, event_types, streams, tags, enabled")]
            )
        await self._validate(spec)
        row = await self._store.update(tenant_id, webhook_id, spec)
        if row is None:
            raise _not_found(webhook_id)
        return row

    async def delete(self, tenant_id: str, webhook_id: uuid.UUID) -> None:
        if not await self._store.delete(tenant_id, webhook_id):
            raise _not_found(webhook_id)

    async def rotate(
        self, tenant_id: str, webhook_id: uuid.UUID, overlap: timedelta | None
    ) -> tuple[str, datetime]:
        """A new secret; the previous one keeps signing beside it until the returned time."""
        if overlap is None:
            overlap = DEFAULT_OVERLAP
        if overlap < timedelta(0) or overlap > MAX_OVERLAP:
            raise InvalidArgument([("overlap", "between 0 and 7 days")])
        secret, sealed = self._secrets.new(str(webhook_id))
        expire = await self._store.rotate(tenant_id, webhook_id, sealed, overlap)
        if expire is None:
            raise _not_found(webhook_id)
        return secret, expire

    async def deliveries(
        self,
        tenant_id: str,
        webhook_id: uuid.UUID,
        *,
        state: int,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> Sequence[DeliveryRow]:
        await self.get(tenant_id, webhook_id)
        return await self._store.deliveries(tenant_id, webhook_id, state=state, after=after, limit=limit)

    async def redeliver(self, tenant_id: str, webhook_id: uuid.UUID, event_id: str) -> DeliveryRow:
        if not event_id:
            raise InvalidArgument([("event_id", "required")])
        hook = await self.get(tenant_id, webhook_id)
        if not hook.enabled:
            raise FailedPrecondition(
                "the webhook is disabled; enable it with UpdateWebhook first",
                violations=[("WEBHOOK_DISABLED", f"webhooks/{webhook_id}", hook.disabled_reason)],
            )
        row = await self._store.redeliver(tenant_id, webhook_id, event_id)
        if row is None:
            raise NotFound(f"event {event_id} not found")
        return row

"""Use cases of WebhookService (but redelivery, services/events/redeliver.py): validate, check
the destination, store; secrets are made here and leave only in the answers to create and
rotate. No I/O of its own: the store, the secret sealer and the destination check are ports.

Create, in order: the fields are validated → the URL's addresses are checked → a secret is made
and stored sealed with the webhook (and, with a request_id, the answer sealed beside it, in the
same transaction) → the answer carries the secret, once.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

from libs.errors import InvalidArgument, NotFound
from libs.page_tokens import Cursor
from libs.request_ids import RequestId
from services.events.kinds import DeliveryState
from services.events.pagination import page_size
from services.events.webhook_records import DeliveryRow, WebhookRow
from services.events.webhook_rules import DEFAULT_OVERLAP, MAX_OVERLAP, WebhookSpec, spec_violations

__all__ = ["UPDATABLE", "Answer", "CheckUrl", "Secrets", "Store", "WebhookCatalog", "not_found", "parse_id"]

# Why the destination of `url` is refused (a private address, a name that does not resolve…),
# or None when it may be called.
CheckUrl = Callable[[str], Awaitable[str | None]]
# The serialized CreateWebhook response for the stored webhook and its secret: what a retry with
# the same request_id gets back byte for byte (made by the servicer, which knows the proto).
Answer = Callable[[WebhookRow, str], bytes]
# The fields UpdateWebhook's update_mask may name.
UPDATABLE = ("url", "event_types", "streams", "tags", "enabled")


class Store(Protocol):
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
        """Stores the webhook and returns `answer(row)`; with a request_id, in one transaction
        with its claim (libs.request_id_store.once), and a repeat returns the first answer."""
        ...

    async def answered(self, request_id: RequestId, unseal: Callable[[bytes], bytes]) -> bytes | None:
        """The first answer for this request id, or None; ALREADY_EXISTS for another request."""
        ...

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
        state: DeliveryState | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[DeliveryRow]: ...


class Secrets(Protocol):
    def new(self, webhook_id: str) -> tuple[str, str]: ...
    def seal_answer(self, answer: bytes, bound_to: str) -> bytes: ...
    def open_answer(self, sealed: bytes, bound_to: str) -> bytes: ...


def parse_id(value: str, field: str) -> uuid.UUID:
    if not value:
        raise InvalidArgument([(field, "required")])
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument([(field, "not a webhook id")]) from None


def _time_and_text(position: str) -> tuple[datetime, str]:
    stamp, sep, rest = position.partition("|")
    if not sep or not rest:
        raise ValueError(position)
    return datetime.fromisoformat(stamp), rest


def _time_and_id(position: str) -> tuple[datetime, uuid.UUID]:
    stamp, webhook_id = _time_and_text(position)
    return stamp, uuid.UUID(webhook_id)


def not_found(webhook_id: uuid.UUID) -> NotFound:
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

    async def create(
        self, tenant_id: str, spec: WebhookSpec, request_id: RequestId | None, answer: Answer
    ) -> bytes:
        """The answer for the stored webhook and its secret (shown once); with a request_id
        used before for the same request, the first call's answer and nothing stored."""
        bound_to = "" if request_id is None else f"{request_id.owner}:{request_id.value}"
        if request_id is not None:
            # A retry gets its first answer before the URL is checked again: the host's addresses
            # may have changed since, and the webhook exists already.
            prior = await self._store.answered(
                request_id, lambda data: self._secrets.open_answer(data, bound_to)
            )
            if prior is not None:
                return prior
        await self._validate(spec)
        webhook_id = str(uuid.uuid4())
        secret, sealed = self._secrets.new(webhook_id)
        return await self._store.create(
            tenant_id,
            webhook_id,
            spec,
            sealed,
            request_id=request_id,
            answer=lambda row: answer(row, secret),
            seal=lambda data: self._secrets.seal_answer(data, bound_to),
            unseal=lambda data: self._secrets.open_answer(data, bound_to),
        )

    async def get(self, tenant_id: str, webhook_id: uuid.UUID) -> WebhookRow:
        row = await self._store.get(tenant_id, webhook_id)
        if row is None:
            raise not_found(webhook_id)
        return row

    async def page(
        self, tenant_id: str, cursor: Cursor, requested_size: int
    ) -> tuple[Sequence[WebhookRow], str]:
        """One page of the tenant's webhooks, oldest first, and the next page's token."""
        size = page_size(requested_size)
        rows = await self._store.page(tenant_id, cursor.parse(_time_and_id), size + 1)
        return cursor.page(rows, size, lambda r: f"{r.create_time.isoformat()}|{r.id}")

    async def update(
        self, tenant_id: str, webhook_id: uuid.UUID, webhook: WebhookSpec, mask: Sequence[str]
    ) -> WebhookRow:
        """Sets the fields `mask` names (update_mask.paths) to their values in `webhook`."""
        unknown = [
            (f"update_mask.paths[{i}]", f"not one of {', '.join(UPDATABLE)}")
            for i, path in enumerate(mask)
            if path not in UPDATABLE
        ]
        if unknown:
            raise InvalidArgument(unknown)
        if not mask:
            raise InvalidArgument([("update_mask", f"name at least one of {', '.join(UPDATABLE)}")])
        spec = replace(webhook, fields=frozenset(mask))
        await self._validate(spec)
        row = await self._store.update(tenant_id, webhook_id, spec)
        if row is None:
            raise not_found(webhook_id)
        return row

    async def delete(self, tenant_id: str, webhook_id: uuid.UUID) -> None:
        if not await self._store.delete(tenant_id, webhook_id):
            raise not_found(webhook_id)

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
            raise not_found(webhook_id)
        return secret, expire

    async def deliveries(
        self, tenant_id: str, webhook_id: uuid.UUID, state: int, cursor: Cursor, requested_size: int
    ) -> tuple[Sequence[DeliveryRow], str]:
        """One page of the delivery log, newest first, and the next page's token; `state` is the
        request's filter (0: every state)."""
        size = page_size(requested_size)
        wanted: DeliveryState | None = None
        if state:
            try:
                wanted = DeliveryState(state)
            except ValueError:
                raise InvalidArgument([("state", f"not a webhook delivery state: {state}")]) from None
        after = cursor.parse(_time_and_text)
        await self.get(tenant_id, webhook_id)
        rows = await self._store.deliveries(tenant_id, webhook_id, state=wanted, after=after, limit=size + 1)
        return cursor.page(rows, size, lambda r: f"{r.create_time.isoformat()}|{r.event_id}")

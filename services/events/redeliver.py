"""RedeliverWebhookEvent: send one stored event to a webhook again (also one delivered, dead
-lettered or never queued because the webhook came later); no I/O of its own.

In order: the event id is required → the webhook must be the tenant's → and enabled (a disabled
one would only dead-letter it again) → the delivery is made due at once.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from libs.errors import FailedPrecondition, InvalidArgument, NotFound
from services.events.manage_webhooks import not_found
from services.events.webhook_records import DeliveryRow, WebhookRow

__all__ = ["Store", "redeliver"]


class Store(Protocol):
    async def get(self, tenant_id: str, webhook_id: uuid.UUID) -> WebhookRow | None: ...
    async def redeliver(self, tenant_id: str, webhook_id: uuid.UUID, event_id: str) -> DeliveryRow | None:
        """The delivery, PENDING and due now; None when the tenant has no such event."""
        ...


async def redeliver(store: Store, tenant_id: str, webhook_id: uuid.UUID, event_id: str) -> DeliveryRow:
    if not event_id:
        raise InvalidArgument([("event_id", "required")])
    hook = await store.get(tenant_id, webhook_id)
    if hook is None:
        raise not_found(webhook_id)
    if not hook.enabled:
        raise FailedPrecondition(
            "the webhook is disabled; enable it with UpdateWebhook first",
            violations=[("WEBHOOK_DISABLED", f"webhooks/{webhook_id}", hook.disabled_reason)],
        )
    row = await store.redeliver(tenant_id, webhook_id, event_id)
    if row is None:
        raise NotFound(f"event {event_id} not found")
    return row

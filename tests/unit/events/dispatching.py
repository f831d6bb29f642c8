"""A WebhookDispatcher over fakes, for the dispatcher's unit tests."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from libs.webhook_secrets import WebhookSecrets
from services.events.webhook_dispatch import WebhookDispatcher
from services.events.webhook_rules import RetrySchedule


def make_dispatcher(store: Any, http: Any, secrets: WebhookSecrets, **limits: Any) -> WebhookDispatcher:
    """`limits`: timeout, max_in_flight, per_webhook, interval, record_linger (defaults 5 s, 64, 4,
    0.5 s, 0: a delivered attempt is recorded in the next turn of the loop)."""
    settings: dict[str, Any] = {
        "timeout": 5,
        "max_in_flight": 64,
        "per_webhook": 4,
        "record_linger": 0.0,
        **limits,
    }
    # No bus: only a disabled webhook publishes, and these tests disable none.
    return WebhookDispatcher(
        store,
        http,
        secrets,
        None,  # type: ignore[arg-type]
        schedule=RetrySchedule(),
        disable_after=timedelta(days=5),
        **settings,
    )

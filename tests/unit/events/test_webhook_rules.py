"""Webhook rules: the default schedule covers 72 h, jitter stays in bounds, the disabling clock,
which events a webhook receives, and field-named validation."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from postwire.v1 import event_pb2

from services.events.webhook_config import WebhookConfig
from services.events.webhook_rules import RetrySchedule, WebhookSpec, should_disable, spec_violations

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DELIVERED = event_pb2.EVENT_TYPE_DELIVERED


def test_the_default_schedule_retries_for_at_least_72_hours_then_dead_letters() -> None:
    schedule = RetrySchedule(jitter=0.0)
    at, attempts = NOW, 1
    while (following := schedule.next_attempt(attempts, at)) is not None:
        at, attempts = following, attempts + 1
    assert at - NOW >= timedelta(hours=72)
    assert attempts == schedule.max_attempts == 10


def test_jitter_stays_within_its_fraction() -> None:
    schedule = RetrySchedule((100.0,), jitter=0.1)
    rng = random.Random(7)
    delays = {(schedule.next_attempt(1, NOW, rng) - NOW).total_seconds() for _ in range(200)}  # type: ignore[operator]
    assert all(90.0 <= d <= 110.0 for d in delays) and len(delays) > 1
    assert schedule.next_attempt(2, NOW) is None


def test_the_schedule_setting_compresses_retries() -> None:
    config = WebhookConfig.from_env({"POSTWIRE_WEBHOOK_RETRY_SCHEDULE": "1,2"})
    assert config.schedule.delays == (1.0, 2.0) and config.schedule.max_attempts == 3


def test_410_disables_at_once_and_other_failures_after_the_period() -> None:
    after = timedelta(days=5)
    assert "410" in should_disable(410, NOW, NOW, after=after)
    assert should_disable(503, NOW, NOW + timedelta(days=4), after=after) == ""
    assert "5 days" in should_disable(503, NOW, NOW + timedelta(days=5), after=after)


def test_violations_name_each_field() -> None:
    spec = WebhookSpec(
        url="http://example.com/x",
        event_types=(DELIVERED, 99),
        streams=("ok", "Not OK"),
        tags=("fine", "no spaces"),
    )
    assert [f for f, _ in spec_violations(spec, allow_plain_http=False)] == [
        "webhook.url",
        "webhook.event_types[1]",
        "webhook.streams[1]",
        "webhook.tags[1]",
    ]
    assert spec_violations(
        WebhookSpec(url="https://u:p@example.com/", event_types=(DELIVERED,)), allow_plain_http=False
    )
    assert (
        spec_violations(
            WebhookSpec(url="https://example.com/hook?k=1", event_types=(DELIVERED,)), allow_plain_http=False
        )
        == []
    )

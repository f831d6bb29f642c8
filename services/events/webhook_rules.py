"""Webhook rules: what a valid webhook is, which events it receives, when a failed delivery is
tried again, and when an endpoint is disabled; pure."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from libs.mail.stream_names import name_problem
from services.events.kinds import EMITTED_TYPES

__all__ = [
    "DEFAULT_SCHEDULE",
    "MAX_OVERLAP",
    "RetrySchedule",
    "WebhookSpec",
    "spec_violations",
]

# Standard Webhooks' example schedule: 9 retries after the first attempt over 75.6 hours, so an
# endpoint down for a long weekend (72 h) still receives everything.
DEFAULT_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)
MAX_OVERLAP = timedelta(days=7)
DEFAULT_OVERLAP = timedelta(hours=24)
MAX_URL = 2048
MAX_TAGS = 10
MAX_STREAMS = 20
_TAG = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# The types a webhook may ask for: everything emitted today (OPENED..UNSUBSCRIBED are reserved).
KNOWN_TYPES = EMITTED_TYPES


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    """What a tenant asks for: where, which event types, which streams and tags (empty: all)."""

    url: str
    event_types: tuple[int, ...]
    streams: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    enabled: bool = True
    fields: frozenset[str] = field(default=frozenset({"url", "event_types", "streams", "tags"}))


def spec_violations(
    spec: WebhookSpec, *, allow_plain_http: bool, prefix: str = "webhook"
) -> list[tuple[str, str]]:
    """Each bad field of the fields being set, as (field path, what is wrong)."""
    v: list[tuple[str, str]] = []
    if "url" in spec.fields:
        problem = url_problem(spec.url, allow_plain_http=allow_plain_http)
        if problem:
            v.append((f"{prefix}.url", problem))
    if "event_types" in spec.fields:
        if not spec.event_types:
            v.append((f"{prefix}.event_types", "at least one event type is required"))
        for i, value in enumerate(spec.event_types):
            if value not in KNOWN_TYPES:
                v.append((f"{prefix}.event_types[{i}]", f"unknown or reserved event type {value}"))
    if "streams" in spec.fields:
        if len(spec.streams) > MAX_STREAMS:
            v.append((f"{prefix}.streams", f"at most {MAX_STREAMS} streams"))
        for i, stream in enumerate(spec.streams):
            problem = name_problem(stream)
            if problem:
                v.append((f"{prefix}.streams[{i}]", problem))
    if "tags" in spec.fields:
        if len(spec.tags) > MAX_TAGS:
            v.append((f"{prefix}.tags", f"at most {MAX_TAGS} tags"))
        for i, tag in enumerate(spec.tags):
            if not _TAG.fullmatch(tag):
                v.append((f"{prefix}.tags[{i}]", "1-64 characters: letters, digits and '_.:-'"))
    return v


def url_problem(url: str, *, allow_plain_http: bool) -> str | None:
    if not url:
        return "required"
    if len(url) > MAX_URL:
        return f"at most {MAX_URL} characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a valid URL"
    del port
    schemes = ("https", "http") if allow_plain_http else ("https",)
    if parts.scheme not in schemes:
        return "must be an https:// URL" + (
            "" if allow_plain_http else " (plain http is allowed only in dev)"
        )
    if not parts.hostname:
        return "must name a host"
    if parts.username or parts.password:
        return "must not carry credentials"
    if parts.fragment:
        return "must not have a fragment"
    if any(c.isspace() or ord(c) < 0x21 for c in url):
        return "must not contain spaces or control characters"
    return None


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Delays after the 1st, 2nd... failed attempt; dead-lettered after len(delays) + 1 attempts."""

    delays: tuple[float, ...] = DEFAULT_SCHEDULE
    # Each delay is stretched or shrunk by up to this fraction, so endpoints that failed together
    # (an outage) are not all retried in the same second.
    jitter: float = 0.1

    @property
    def max_attempts(self) -> int:
        return len(self.delays) + 1

    def next_attempt(self, attempts: int, now: datetime, rng: random.Random | None = None) -> datetime | None:
        """When to try again after `attempts` failed attempts; None once they are used up."""
        if attempts >= self.max_attempts:
            return None
        base = self.delays[attempts - 1]
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return now + timedelta(seconds=base * (1 + spread))


def should_disable(status: int, failing_since: datetime | None, now: datetime, *, after: timedelta) -> str:
    """Why a webhook is disabled after a failed attempt, or '' to keep it."""
    if status == 410:
        return "the endpoint answered 410 Gone"
    if failing_since is not None and now - failing_since >= after:
        return f"the endpoint failed every attempt for {_human(after)}"
    return ""


def _human(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400} days"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} hours"
    return f"{seconds} seconds"

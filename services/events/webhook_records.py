"""What the webhook store hands out: endpoints, delivery log entries and leased deliveries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["Claim", "Delivered", "DeliveryRow", "WebhookRow"]


@dataclass(frozen=True, slots=True)
class WebhookRow:
    id: str
    url: str
    event_types: tuple[int, ...]
    streams: tuple[str, ...]
    tags: tuple[str, ...]
    enabled: bool
    disabled_reason: str
    create_time: datetime


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    event_id: str
    event_type: int
    state: int
    attempts: int
    last_status: int
    last_response: str
    last_latency_ms: int
    last_attempt_time: datetime | None
    next_attempt_time: datetime
    create_time: datetime


@dataclass(frozen=True, slots=True)
class Claim:
    """One due delivery, leased to this dispatcher."""

    webhook_id: str
    event_id: str
    attempts: int
    trace_context: str
    url: str
    secret: str  # sealed
    previous_secret: str | None  # sealed, while its overlap lasts
    payload: bytes  # the stored postwire.v1.Event


@dataclass(frozen=True, slots=True)
class Delivered:
    """A successful attempt to record: the endpoint answered 2xx."""

    claim: Claim
    status: int
    snippet: str
    latency_ms: int

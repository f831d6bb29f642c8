"""Settings of webhook delivery in the events service."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from libs.config import ConfigError, env_float, env_int
from libs.public_addresses import AddressPolicy
from services.events.webhook_rules import DEFAULT_SCHEDULE, RetrySchedule

__all__ = ["WebhookConfig"]


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    # Back-off after each failed attempt (then dead-lettered).
    schedule: RetrySchedule
    # How long an endpoint may fail every attempt before it is disabled.
    disable_after_seconds: float
    # One attempt's time limit: the variable libs.http_guard reads, here to bound the attempt
    # as a whole and size the lease.
    timeout_seconds: float
    max_in_flight: int
    per_endpoint: int
    # Which non-public addresses endpoints may have (dev only). Any allowance also allows plain
    # http: here for validation, in libs.http_guard for sending.
    allow: AddressPolicy

    @property
    def allow_plain_http(self) -> bool:
        return self.allow.allow_all or bool(self.allow.allowed)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebhookConfig:
        return cls(
            schedule=RetrySchedule(_schedule(env)),
            disable_after_seconds=env_float(
                env, "POSTWIRE_WEBHOOK_DISABLE_AFTER_SECONDS", 5 * 86400.0, minimum=1.0
            ),
            timeout_seconds=env_float(env, "POSTWIRE_WEBHOOK_TIMEOUT_SECONDS", 15.0, minimum=0.1),
            max_in_flight=env_int(env, "POSTWIRE_WEBHOOK_MAX_IN_FLIGHT", 64, minimum=1),
            per_endpoint=env_int(env, "POSTWIRE_WEBHOOK_PER_ENDPOINT", 4, minimum=1),
            allow=AddressPolicy.from_env(env, "POSTWIRE_WEBHOOK_ALLOW_PRIVATE"),
        )


def _schedule(env: Mapping[str, str]) -> tuple[float, ...]:
    """POSTWIRE_WEBHOOK_RETRY_SCHEDULE: seconds to wait after the 1st, 2nd… failed attempt,
    comma-separated; its length + 1 is the number of attempts before dead-lettering."""
    name = "POSTWIRE_WEBHOOK_RETRY_SCHEDULE"
    raw = env.get(name, "").strip()
    if not raw:
        return DEFAULT_SCHEDULE
    try:
        delays = tuple(float(item) for item in raw.split(","))
    except ValueError:
        raise ConfigError(f"{name}: expected comma-separated seconds, got {raw!r}") from None
    if any(d <= 0 for d in delays):
        raise ConfigError(f"{name}: every delay must be positive, got {raw!r}")
    return delays

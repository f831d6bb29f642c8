from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from libs.config import CommonConfig, ConfigError, env_float, env_int, env_str
from libs.public_addresses import AddressPolicy
from libs.token_keys import KeyRing
from services.events.webhook_rules import DEFAULT_SCHEDULE, RetrySchedule


@dataclass(frozen=True, slots=True)
class EventsConfig:
    common: CommonConfig
    policy_addr: str
    max_streams_per_tenant: int
    # Seals page tokens (and later every other token Postwire mints); the first key seals.
    token_keys: KeyRing
    # Webhook delivery: back-off after each failed attempt (then dead-lettered), how long an
    # endpoint may fail every attempt before it is disabled, one attempt's time limit (the same
    # variable libs.http_guard reads), and which non-public addresses endpoints may have (dev
    # only; any allowance also allows plain http, here for validation, in the guard for sending).
    webhook_schedule: RetrySchedule
    webhook_disable_after_seconds: float
    webhook_timeout_seconds: float
    webhook_max_in_flight: int
    webhook_per_endpoint: int
    webhook_allow: AddressPolicy

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EventsConfig:
        return cls(
            common=CommonConfig.from_env(env, service="events", default_port=50066),
            policy_addr=env_str(env, "POSTWIRE_POLICY_ADDR", "127.0.0.1:50063"),
            max_streams_per_tenant=env_int(env, "POSTWIRE_MAX_STREAMS_PER_TENANT", 100, minimum=1),
            token_keys=KeyRing.from_env(env),
            webhook_schedule=RetrySchedule(_schedule(env)),
            webhook_disable_after_seconds=env_float(
                env, "POSTWIRE_WEBHOOK_DISABLE_AFTER_SECONDS", 5 * 86400.0, minimum=1.0
            ),
            webhook_timeout_seconds=env_float(env, "POSTWIRE_WEBHOOK_TIMEOUT_SECONDS", 15.0, minimum=0.1),
            webhook_max_in_flight=env_int(env, "POSTWIRE_WEBHOOK_MAX_IN_FLIGHT", 64, minimum=1),
            webhook_per_endpoint=env_int(env, "POSTWIRE_WEBHOOK_PER_ENDPOINT", 4, minimum=1),
            webhook_allow=AddressPolicy.from_env(env, "POSTWIRE_WEBHOOK_ALLOW_PRIVATE"),
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

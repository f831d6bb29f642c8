from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from libs.config import CommonConfig, env_float, env_int, env_str
from libs.token_keys import KeyRing
from services.events.webhook_config import WebhookConfig


@dataclass(frozen=True, slots=True)
class EventsConfig:
    common: CommonConfig
    policy_addr: str
    max_streams_per_tenant: int
    webhooks: WebhookConfig
    # Seals page tokens (and later every other token Postwire mints); the first key seals.
    token_keys: KeyRing
    # A live stream re-reads PostgreSQL at least this often even if no stored notice reaches it.
    stream_poll_seconds: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EventsConfig:
        return cls(
            common=CommonConfig.from_env(env, service="events", default_port=50066),
            policy_addr=env_str(env, "POSTWIRE_POLICY_ADDR", "127.0.0.1:50063"),
            max_streams_per_tenant=env_int(env, "POSTWIRE_MAX_STREAMS_PER_TENANT", 100, minimum=1),
            webhooks=WebhookConfig.from_env(env),
            token_keys=KeyRing.from_env(env),
            stream_poll_seconds=env_float(env, "POSTWIRE_STREAM_POLL_SECONDS", 2.0, minimum=0.05),
        )

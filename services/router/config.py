from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from libs.config import CommonConfig, env_float, env_int, env_str


@dataclass(frozen=True, slots=True)
class RouterConfig:
    common: CommonConfig
    template_addr: str
    hostname: str
    concurrency: int
    # JetStream AckWait of the route consumer: how soon a task held by a replica that died comes
    # back (the sweeper leaves leased work alone). Routing is short (one render, one build).
    ack_wait: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RouterConfig:
        return cls(
            common=CommonConfig.from_env(env, service="router", default_port=50064),
            template_addr=env_str(env, "POSTWIRE_TEMPLATE_ADDR", "127.0.0.1:50062"),
            hostname=env_str(env, "POSTWIRE_HOSTNAME", "postwire.localhost"),
            concurrency=env_int(env, "POSTWIRE_ROUTER_CONCURRENCY", 32, minimum=1),
            ack_wait=env_float(env, "POSTWIRE_ACK_WAIT_SECONDS", 30.0, minimum=1.0),
        )

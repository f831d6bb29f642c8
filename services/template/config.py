from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from libs.config import CommonConfig, env_float, env_int, env_str
from libs.token_keys import KeyRing


@dataclass(frozen=True, slots=True)
class TemplateConfig:
    common: CommonConfig
    policy_addr: str
    render_time_limit_seconds: float
    # Seals page tokens (and later every other token Postwire mints); the first key seals.
    token_keys: KeyRing
    render_workers: int
    render_memory_mb: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TemplateConfig:
        return cls(
            common=CommonConfig.from_env(env, service="template", default_port=50062),
            policy_addr=env_str(env, "POSTWIRE_POLICY_ADDR", "127.0.0.1:50063"),
            render_time_limit_seconds=env_float(env, "POSTWIRE_RENDER_TIME_LIMIT_SECONDS", 2.0, minimum=0.01),
            token_keys=KeyRing.from_env(env),
            render_workers=env_int(env, "POSTWIRE_RENDER_WORKERS", 2, minimum=1),
            # Below this a worker cannot load the renderer, and would be restarted forever.
            render_memory_mb=env_int(env, "POSTWIRE_RENDER_MEMORY_MB", 512, minimum=128),
        )

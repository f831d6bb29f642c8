from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from libs.config import CommonConfig, env_str


@dataclass(frozen=True, slots=True)
class TemplateConfig:
    common: CommonConfig
    policy_addr: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TemplateConfig:
        return cls(
            common=CommonConfig.from_env(env, service="template", default_port=50062),
            policy_addr=env_str(env, "POSTWIRE_POLICY_ADDR", "127.0.0.1:50063"),
        )

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from libs.config import CommonConfig, env_str

DEV_PEPPER = "postwire-dev-pepper-change-me"


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    common: CommonConfig
    # Keyed hashing means a leaked api_keys table alone cannot be used to test guesses offline.
    api_key_pepper: bytes
    # Empty disables AdminService (every call UNAUTHENTICATED).
    admin_token: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PolicyConfig:
        return cls(
            common=CommonConfig.from_env(env, service="policy", default_port=50063),
            api_key_pepper=env_str(env, "POSTWIRE_API_KEY_PEPPER", DEV_PEPPER).encode(),
            admin_token=env_str(env, "POSTWIRE_ADMIN_TOKEN", ""),
        )

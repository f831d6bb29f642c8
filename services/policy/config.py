from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from libs.config import CommonConfig, env_float, env_host_port, env_str

# The dev defaults live beside the check that refuses them outside POSTWIRE_ENV=dev.
from libs.dev_switch import DEV_PEPPER, DEV_SECRET_KEY
from libs.domain_keys import secret_key
from libs.return_path import ReturnPathConfig
from libs.token_keys import KeyRing

__all__ = ["DEV_PEPPER", "DEV_SECRET_KEY", "PolicyConfig"]


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    common: CommonConfig
    # Keyed hashing means a leaked api_keys table alone cannot be used to test guesses offline.
    api_key_pepper: bytes
    # Empty disables AdminService (every call UNAUTHENTICATED).
    admin_token: str
    # Encrypts DKIM private keys at rest. Changing it makes stored keys unreadable.
    secret_key: str
    dns_resolver: tuple[str, int] | None
    dns_timeout_seconds: float
    spf_include: str
    # One definition with mta_worker, so the CNAME DomainService asks for is where bounces go.
    return_path: ReturnPathConfig
    # From domains accepted without verification: only for local runs and tests.
    dev_from_domains: frozenset[str]
    # Seals page tokens (and later every other token Postwire mints); the first key seals.
    token_keys: KeyRing

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PolicyConfig:
        return cls(
            common=CommonConfig.from_env(env, service="policy", default_port=50063),
            api_key_pepper=env_str(env, "POSTWIRE_API_KEY_PEPPER", DEV_PEPPER).encode(),
            admin_token=env_str(env, "POSTWIRE_ADMIN_TOKEN", ""),
            secret_key=secret_key(env),
            dns_resolver=env_host_port(env, "POSTWIRE_DNS_RESOLVER", "")
            if env.get("POSTWIRE_DNS_RESOLVER")
            else None,
            dns_timeout_seconds=env_float(env, "POSTWIRE_DNS_TIMEOUT_SECONDS", 5.0, minimum=0.1),
            spf_include=env_str(env, "POSTWIRE_SPF_INCLUDE", "_spf.postwire.localhost"),
            return_path=ReturnPathConfig.from_env(env),
            dev_from_domains=frozenset(
                d.strip().lower()
                for d in env_str(env, "POSTWIRE_DEV_FROM_DOMAINS", "").split(",")
                if d.strip()
            ),
            token_keys=KeyRing.from_env(env),
        )

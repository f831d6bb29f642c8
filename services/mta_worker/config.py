from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from libs.config import CommonConfig, ConfigError, env_float, env_int, env_str
from libs.domain_keys import secret_key
from libs.return_path import ReturnPathConfig
from libs.token_keys import KeyRing
from services.mta_worker.mx_rules import AddressPolicy, dns_resolver, dns_timeout, mx_port
from services.mta_worker.retry_schedule import RetryPolicy
from services.mta_worker.routes import RoutingRules
from services.mta_worker.smtp_session import Timeouts, TlsMode

__all__ = ["RelaySettings", "WorkerConfig"]

_RELAY_TLS = {"starttls": TlsMode.REQUIRED, "implicit": TlsMode.IMPLICIT, "none": TlsMode.NONE}


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """How to talk to POSTWIRE_SMARTHOST: TLS (verified against the system CAs or a bundle) and
    AUTH, which is never configured without TLS."""

    tls: TlsMode
    ca_file: str | None
    username: str | None
    password: str | None = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RelaySettings:
        raw = env.get("POSTWIRE_SMARTHOST_TLS", "starttls").strip().lower() or "starttls"
        if raw not in _RELAY_TLS:
            raise ConfigError(f"POSTWIRE_SMARTHOST_TLS must be one of starttls, implicit, none (got {raw!r})")
        tls = _RELAY_TLS[raw]
        username = env.get("POSTWIRE_SMARTHOST_USERNAME") or None
        password = env.get("POSTWIRE_SMARTHOST_PASSWORD") or None
        if username and tls is TlsMode.NONE:
            raise ConfigError(
                "POSTWIRE_SMARTHOST_USERNAME is set but POSTWIRE_SMARTHOST_TLS=none: credentials are never"
                " sent without TLS"
            )
        if bool(username) != bool(password):
            raise ConfigError("POSTWIRE_SMARTHOST_USERNAME and POSTWIRE_SMARTHOST_PASSWORD go together")
        return cls(tls, env.get("POSTWIRE_SMARTHOST_CA_FILE") or None, username, password)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    common: CommonConfig
    routing: RoutingRules
    relay: RelaySettings
    mx_port: int
    mx_addresses: AddressPolicy
    mx_ca_file: str | None
    tls_required_domains: frozenset[str]
    dns_resolver: tuple[str, int] | None
    dns_timeout: float
    timeouts: Timeouts
    max_messages_per_connection: int
    connection_idle_seconds: float
    hostname: str
    return_path: ReturnPathConfig
    token_keys: KeyRing
    secret_key: str = field(repr=False)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    ack_wait: float = 30.0
    concurrency: int = 32
    retry_concurrency: int = 8
    slots_per_destination: int = 16

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerConfig:
        if env.get("POSTWIRE_SMTP_TIMEOUT_SECONDS"):
            raise ConfigError(
                "POSTWIRE_SMTP_TIMEOUT_SECONDS was replaced by one time-out per SMTP phase"
                " (POSTWIRE_SMTP_CONNECT_TIMEOUT_SECONDS, …_GREETING_…, …_DATA_DONE_…; see the README)"
            )
        return cls(
            common=CommonConfig.from_env(env, service="mta_worker", default_port=50065),
            routing=RoutingRules.from_env(env),
            relay=RelaySettings.from_env(env),
            mx_port=mx_port(env),
            mx_addresses=AddressPolicy.from_env(env),
            mx_ca_file=env.get("POSTWIRE_MX_CA_FILE") or None,
            tls_required_domains=frozenset(
                d.strip().lower().rstrip(".")
                for d in env.get("POSTWIRE_TLS_REQUIRED_DOMAINS", "").split(",")
                if d.strip()
            ),
            dns_resolver=dns_resolver(env),
            dns_timeout=dns_timeout(env),
            timeouts=Timeouts.from_env(env),
            max_messages_per_connection=env_int(
                env, "POSTWIRE_SMTP_MAX_MESSAGES_PER_CONNECTION", 100, minimum=1
            ),
            connection_idle_seconds=env_float(env, "POSTWIRE_SMTP_IDLE_SECONDS", 10.0, minimum=0.1),
            hostname=env_str(env, "POSTWIRE_HOSTNAME", "postwire.localhost"),
            return_path=ReturnPathConfig.from_env(env),
            token_keys=KeyRing.from_env(env),
            secret_key=secret_key(env),
            retry=RetryPolicy(
                base_seconds=env_float(env, "POSTWIRE_RETRY_BASE_SECONDS", 60.0, minimum=0.1),
                max_seconds=env_float(env, "POSTWIRE_RETRY_MAX_SECONDS", 3600.0, minimum=0.1),
                give_up_after=timedelta(
                    seconds=env_float(env, "POSTWIRE_RETRY_GIVE_UP_SECONDS", 5 * 86400.0)
                ),
            ),
            ack_wait=env_float(env, "POSTWIRE_ACK_WAIT_SECONDS", 30.0, minimum=1.0),
            concurrency=env_int(env, "POSTWIRE_WORKER_CONCURRENCY", 32, minimum=1),
            retry_concurrency=env_int(env, "POSTWIRE_RETRY_CONCURRENCY", 8, minimum=1),
            slots_per_destination=env_int(env, "POSTWIRE_MAX_SLOTS_PER_DESTINATION", 16, minimum=1),
        )

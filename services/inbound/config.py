from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from libs.config import CommonConfig, ConfigError, env_host_port, env_int, env_str
from libs.return_path import ReturnPathConfig
from libs.token_keys import KeyRing

# RFC 5321 only asks for 64 KiB; a report carrying its original is rarely over a few hundred
# KiB, and nothing bigger is worth parsing. Advertised with SIZE; larger is refused with 552.
MAX_MESSAGE_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class InboundConfig:
    common: CommonConfig
    # The SMTP listener (the gRPC port in `common` serves health and reflection only).
    smtp_host: str
    smtp_port: int
    # The name in the greeting and EHLO reply.
    hostname: str
    # STARTTLS is offered when both are set (PEM files).
    tls_cert: str
    tls_key: str
    # Concurrent connections one client IP may hold; one more is answered 421 and closed.
    max_connections_per_ip: int
    # Opens the return-path tokens (any key on the ring, so tokens minted before a rotation work).
    token_keys: KeyRing
    return_path: ReturnPathConfig

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> InboundConfig:
        host, port = env_host_port(env, "POSTWIRE_INBOUND_LISTEN", "127.0.0.1:2526")
        cert = env_str(env, "POSTWIRE_INBOUND_TLS_CERT", "")
        key = env_str(env, "POSTWIRE_INBOUND_TLS_KEY", "")
        if bool(cert) != bool(key):
            raise ConfigError("POSTWIRE_INBOUND_TLS_CERT and POSTWIRE_INBOUND_TLS_KEY: set both or neither")
        return cls(
            common=CommonConfig.from_env(env, service="inbound", default_port=50067),
            smtp_host=host,
            smtp_port=port,
            hostname=env_str(env, "POSTWIRE_HOSTNAME", "postwire.localhost"),
            tls_cert=cert,
            tls_key=key,
            max_connections_per_ip=env_int(env, "POSTWIRE_INBOUND_MAX_CONNECTIONS_PER_IP", 10, minimum=1),
            token_keys=KeyRing.from_env(env),
            return_path=ReturnPathConfig.from_env(env),
        )

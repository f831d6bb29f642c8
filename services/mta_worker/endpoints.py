"""From a route to the SMTP endpoints to try, in order, each with its TLS policy.

MX delivery: every checked address of every MX host in the resolver's order, opportunistic TLS
unless the recipient domain (POSTWIRE_TLS_REQUIRED_DOMAINS) or the tenant (require_tls) requires a
verified certificate. Relay delivery: the one configured relay with its TLS mode and credentials.
"""

from __future__ import annotations

import ssl
from collections.abc import Hashable
from dataclasses import dataclass

from services.mta_worker.config import RelaySettings
from services.mta_worker.mx_lookup import MxHosts
from services.mta_worker.routes import RelayRoute
from services.mta_worker.smtp_session import Endpoint, TlsMode

__all__ = ["EndpointPlan", "Endpoints"]

# Postfix's smtp_mx_address_limit: enough to get past a dead host or two without hammering.
MAX_ADDRESSES = 5


@dataclass(frozen=True, slots=True)
class EndpointPlan:
    # Idle sessions are shared under this key: same destination, same TLS requirement.
    key: Hashable
    endpoints: tuple[Endpoint, ...]


def _verifying(ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Endpoints:
    def __init__(self, relay: RelaySettings, *, mx_port: int, mx_ca_file: str | None) -> None:
        self._relay = relay
        self._mx_port = mx_port
        self._relay_context = _verifying(relay.ca_file) if relay.tls is not TlsMode.NONE else None
        self._mx_context = _verifying(mx_ca_file)

    def relay(self, route: RelayRoute) -> EndpointPlan:
        credentials = None
        if self._relay.username and self._relay.password:
            credentials = (self._relay.username, self._relay.password)
        endpoint = Endpoint(
            host=route.host,
            address=route.host,
            port=route.port,
            tls=self._relay.tls,
            verify=self._relay_context,
            credentials=credentials,
        )
        return EndpointPlan(("relay", route.host, route.port), (endpoint,))

    def mx(self, domain: str, hosts: MxHosts, *, tls_required: bool) -> EndpointPlan:
        tls = TlsMode.REQUIRED if tls_required else TlsMode.OPPORTUNISTIC
        endpoints = [
            Endpoint(host=host.name, address=address, port=self._mx_port, tls=tls, verify=self._mx_context)
            for host in hosts.hosts
            for address in host.addresses
        ]
        return EndpointPlan(("mx", domain, tls), tuple(endpoints[:MAX_ADDRESSES]))

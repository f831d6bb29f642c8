"""Which addresses Postwire may connect to on behalf of a tenant or a DNS answer (MX hosts,
webhook endpoints): only public ones, unless a dev-only setting allows more. One definition, so
SMTP and HTTP egress refuse the same ranges (loopback, private, link-local and cloud metadata,
CGNAT, ULA, and the IPv6 forms that embed those IPv4 addresses)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from libs.config import ConfigError
from libs.dev_switch import is_dev

__all__ = ["AddressPolicy", "is_public"]

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_public(address: str) -> bool:
    """Whether `address` is on the global internet. `is_global` alone is not enough: it calls
    multicast global and does not look inside IPv6 forms that carry an IPv4 address."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(str(embedded))
        if ip.is_site_local:
            return False
    elif ip in _CGNAT:
        return False
    return ip.is_global and not (
        ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_private
    )


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which non-global addresses may be connected to anyway (dev only); global ones always may."""

    allow_all: bool = False
    allowed: tuple[Network, ...] = ()

    def permits(self, address: str) -> bool:
        if self.allow_all or is_public(address):
            return True
        ip = ipaddress.ip_address(address)
        return any(ip in network for network in self.allowed)

    @classmethod
    def from_env(cls, env: Mapping[str, str], name: str = "POSTWIRE_MX_ALLOW_PRIVATE") -> AddressPolicy:
        """`name` (POSTWIRE_MX_ALLOW_PRIVATE, POSTWIRE_WEBHOOK_ALLOW_PRIVATE): unset or `false`
        blocks, `true` allows every address, a comma list of CIDRs allows those ranges. Any
        allowance is refused outside POSTWIRE_ENV=dev."""
        raw = env.get(name, "").strip()
        if not raw or raw.lower() == "false":
            return cls()
        if raw.lower() == "true":
            policy = cls(allow_all=True)
        else:
            networks: list[Network] = []
            for item in raw.split(","):
                try:
                    networks.append(ipaddress.ip_network(item.strip(), strict=False))
                except ValueError:
                    raise ConfigError(
                        f"{name}: expected true, false or a comma list of CIDRs, got {item.strip()!r}"
                    ) from None
            policy = cls(allowed=tuple(networks))
        if not is_dev(env):
            raise ConfigError(
                f"{name} allows connections to private addresses and is for local runs only: "
                "unset it, or set POSTWIRE_ENV=dev"
            )
        return policy

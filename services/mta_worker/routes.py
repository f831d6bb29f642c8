"""Where a recipient's mail is sent: straight to its domain's MX hosts, or through one relay; pure.

Today there is one rule, the operator's POSTWIRE_DELIVERY_MODE. The traffic-shaping work adds
rules (per tenant, per stream, per destination) to the same `route` decision, which is why it
already takes the tenant and the stream.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from libs.config import ConfigError, env_host_port

__all__ = ["DeliveryMode", "MxRoute", "RelayRoute", "Route", "RoutingRules", "route"]


class DeliveryMode(enum.Enum):
    MX = "mx"
    SMARTHOST = "smarthost"


@dataclass(frozen=True, slots=True)
class MxRoute:
    """Deliver to the MX hosts of `domain` (case-folded, no final dot)."""

    domain: str


@dataclass(frozen=True, slots=True)
class RelayRoute:
    host: str
    port: int


Route = MxRoute | RelayRoute


@dataclass(frozen=True, slots=True)
class RoutingRules:
    mode: DeliveryMode
    # Set exactly when mode is SMARTHOST: a relay address left over from a relay setup while
    # mail goes to MX hosts would be silently ignored, so that combination is refused.
    smarthost: tuple[str, int] | None

    def __post_init__(self) -> None:
        if (self.mode is DeliveryMode.SMARTHOST) != (self.smarthost is not None):
            raise ValueError("RoutingRules: a smarthost is given exactly in smarthost mode")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RoutingRules:
        raw_mode = env.get("POSTWIRE_DELIVERY_MODE", "").strip().lower() or DeliveryMode.MX.value
        try:
            mode = DeliveryMode(raw_mode)
        except ValueError:
            raise ConfigError(f"POSTWIRE_DELIVERY_MODE: expected mx or smarthost, got {raw_mode!r}") from None
        has_smarthost = bool(env.get("POSTWIRE_SMARTHOST", "").strip())
        if mode is DeliveryMode.MX and has_smarthost:
            raise ConfigError(
                "POSTWIRE_SMARTHOST is set but POSTWIRE_DELIVERY_MODE is mx (the default): "
                "set POSTWIRE_DELIVERY_MODE=smarthost to send through the relay, "
                "or unset POSTWIRE_SMARTHOST to deliver to MX hosts"
            )
        if mode is DeliveryMode.SMARTHOST and not has_smarthost:
            raise ConfigError(
                "POSTWIRE_DELIVERY_MODE=smarthost needs POSTWIRE_SMARTHOST=host:port (the relay)"
            )
        smarthost = env_host_port(env, "POSTWIRE_SMARTHOST", "") if has_smarthost else None
        return cls(mode=mode, smarthost=smarthost)


def route(rules: RoutingRules, tenant_id: str, stream: str, domain: str) -> Route:
    """The route for mail from `tenant_id`'s `stream` to a recipient at `domain`."""
    if rules.smarthost is not None:  # set exactly in smarthost mode
        host, port = rules.smarthost
        return RelayRoute(host=host, port=port)
    return MxRoute(domain=domain.strip().rstrip(".").lower())

"""Which hosts and addresses to try for a recipient domain, decided from raw DNS answers; pure.

RFC 5321 §5.1 and RFC 7505 (see DELIVERY.md §2): MX records in preference order, shuffled within
one preference; no MX record means the domain itself at preference 0 ("implicit MX"); a lone
root target is a null MX (the domain takes no mail); NXDOMAIN is permanent, a failed lookup is
temporary. Addresses outside the global internet are removed, since an MX record pointing at
127.0.0.1, 10.x or 169.254.169.254 would otherwise make the worker talk to its own network
(a loop, or a request forgery against internal services).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from postwire.v1 import message_pb2

from libs.config import ConfigError, env_float, env_host_port, env_int
from libs.public_addresses import AddressPolicy, is_public

__all__ = [
    "MAX_HOSTS",
    "AddressAnswer",
    "AddressPolicy",
    "Exchange",
    "MxAnswer",
    "MxFailure",
    "MxHost",
    "MxHosts",
    "Plan",
    "Status",
    "assemble",
    "cache_ttl",
    "dns_resolver",
    "dns_timeout",
    "invalid_domain",
    "is_public",
    "mx_port",
    "negative_ttl",
    "plan",
]

# Postfix's smtp_mx_address_limit: enough alternates for any real domain, and a bound on the
# lookups and connection attempts one hostile MX set can cost.
MAX_HOSTS = 5
MIN_CACHE_SECONDS = 1.0
MAX_CACHE_SECONDS = 3600.0
# RFC 2308 leaves a negative answer without an SOA uncached; one minute spares the resolver a
# query per message for a mistyped domain and is short enough for a fix to be seen soon.
NEGATIVE_SECONDS_WITHOUT_SOA = 60.0

_HARD = message_pb2.BOUNCE_CATEGORY_HARD
_SOFT = message_pb2.BOUNCE_CATEGORY_SOFT
_CONFIG = message_pb2.BOUNCE_CATEGORY_CONFIG


@dataclass(frozen=True, slots=True)
class MxHost:
    name: str
    preference: int
    # Connect to these and only these: they are the addresses the policy checked, so a second
    # lookup at connect time cannot swap in a private one (DNS rebinding).
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MxHosts:
    hosts: tuple[MxHost, ...]  # in the order to try


@dataclass(frozen=True, slots=True)
class MxFailure:
    permanent: bool
    code: int
    enhanced: str
    text: str
    category: message_pb2.BounceCategory.ValueType


class Status(enum.Enum):
    FOUND = "found"
    NODATA = "nodata"  # the name exists, without records of the type asked for
    NXDOMAIN = "nxdomain"
    FAILED = "failed"  # SERVFAIL, time-out, unreachable resolver: nothing is known


@dataclass(frozen=True, slots=True)
class Exchange:
    preference: int
    name: str  # "" for the root, i.e. the null MX target "."


@dataclass(frozen=True, slots=True)
class MxAnswer:
    status: Status
    exchanges: tuple[Exchange, ...] = ()
    ttl: float = 0.0
    detail: str = ""  # why a lookup FAILED, for the deferral text


@dataclass(frozen=True, slots=True)
class AddressAnswer:
    status: Status
    addresses: tuple[str, ...] = ()
    ttl: float = 0.0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    exchanges: tuple[Exchange, ...]  # in the order to try
    implicit: bool  # no MX records: the domain's own addresses


def _temporary(text: str) -> MxFailure:
    return MxFailure(permanent=False, code=451, enhanced="4.4.3", text=text, category=_SOFT)


def _hard(code: int, enhanced: str, text: str) -> MxFailure:
    return MxFailure(permanent=True, code=code, enhanced=enhanced, text=text, category=_HARD)


def _host_name(name: str) -> str:
    return name.rstrip(".").lower()


def invalid_domain(domain: str) -> MxFailure:
    """For a recipient domain that is not a DNS name at all (an empty or overlong label)."""
    return _hard(550, "5.1.2", f"recipient domain {domain!r} is not a valid domain name")


def plan(
    domain: str, answer: MxAnswer, rng: random.Random, *, max_hosts: int = MAX_HOSTS
) -> Plan | MxFailure:
    """The exchanges to resolve for `domain`, given the answer to its MX query."""
    if answer.status is Status.NXDOMAIN:
        return _hard(550, "5.1.2", f"recipient domain {domain} does not exist (NXDOMAIN)")
    if answer.status is Status.FAILED:
        return _temporary(f"DNS lookup of the MX records of {domain} failed: {answer.detail or 'no answer'}")
    records = [Exchange(e.preference, _host_name(e.name)) for e in answer.exchanges]
    if not records:
        return Plan((Exchange(0, domain),), implicit=True)
    if len(records) == 1 and not records[0].name:
        return MxFailure(
            permanent=True,
            code=556,
            enhanced="5.1.10",
            text=f"recipient domain accepts no mail (null MX): {domain}",
            category=_HARD,
        )
    # RFC 7505 forbids a null MX beside others; such a root target can only be skipped.
    usable = [e for e in records if e.name]
    # A random key per call keeps equal preferences in a fresh order each time, so load spreads
    # over a domain's equal MX hosts even while the raw answer is cached.
    keyed = sorted(usable, key=lambda e: (e.preference, rng.random()))
    return Plan(tuple(keyed[:max_hosts]), implicit=False)


def assemble(
    domain: str,
    planned: Plan,
    answers: Sequence[tuple[AddressAnswer, AddressAnswer]],
    allow: AddressPolicy,
) -> MxHosts | MxFailure:
    """Hosts with the addresses that may be used, from each planned exchange's (A, AAAA) answers.

    A host whose lookup failed is skipped when another host resolves; if none does, the result
    is temporary, since the failed one may resolve to a usable address on the next attempt.
    """
    hosts: list[MxHost] = []
    failed: list[str] = []
    blocked: tuple[str, str] | None = None
    for exchange, (a, aaaa) in zip(planned.exchanges, answers, strict=True):
        found = [x for answer in (a, aaaa) if answer.status is Status.FOUND for x in answer.addresses]
        if not found and Status.FAILED in (a.status, aaaa.status):
            failed.append(f"{exchange.name}: {a.detail or aaaa.detail or 'no answer'}")
            continue
        permitted = tuple(x for x in found if allow.permits(x))
        if permitted:
            hosts.append(MxHost(exchange.name, exchange.preference, permitted))
        elif found and blocked is None:
            blocked = (exchange.name, found[0])
    if hosts:
        return MxHosts(tuple(hosts))
    if failed:
        return _temporary(f"DNS lookup of the MX hosts of {domain} failed: {'; '.join(failed)}")
    if blocked is not None:
        host, address = blocked
        return MxFailure(
            permanent=True,
            code=550,
            enhanced="5.4.4",
            text=f"blocked destination: {host} resolves to {address} (private address)",
            category=_CONFIG,
        )
    if planned.implicit:
        return _hard(550, "5.1.2", f"recipient domain {domain} has no MX and no address record")
    names = ", ".join(e.name for e in planned.exchanges)
    return _hard(550, "5.4.4", f"no MX host of {domain} has an address: {names}")


# -- cache lifetimes and settings ---------------------------------------------------------------


def cache_ttl(seconds: float) -> float:
    """How long to keep an answer: its TTL within [1 s, 1 h]. A zero TTL still gets a second, so
    a burst of messages to one domain costs one query; a day-long TTL is cut to an hour, so a
    fixed record is seen the same day."""
    return min(MAX_CACHE_SECONDS, max(MIN_CACHE_SECONDS, float(seconds)))


def negative_ttl(soa: tuple[int, int] | None) -> float:
    """How long to keep a negative answer, from the (TTL, minimum) of the SOA that came with it
    (RFC 2308 §5: the smaller of the two), else one minute; clamped as `cache_ttl`."""
    if soa is None:
        return cache_ttl(NEGATIVE_SECONDS_WITHOUT_SOA)
    return cache_ttl(min(soa))


def mx_port(env: Mapping[str, str]) -> int:
    """POSTWIRE_MX_PORT: the port MX hosts are reached on (25; tests point it at loopback sinks)."""
    port = env_int(env, "POSTWIRE_MX_PORT", 25, minimum=1)
    if port > 65535:
        raise ConfigError(f"POSTWIRE_MX_PORT: must be at most 65535, got {port}")
    return port


def dns_resolver(env: Mapping[str, str]) -> tuple[str, int] | None:
    """POSTWIRE_DNS_RESOLVER as host:port, or None (empty) for the system resolver."""
    if not env.get("POSTWIRE_DNS_RESOLVER", "").strip():
        return None
    return env_host_port(env, "POSTWIRE_DNS_RESOLVER", "")


def dns_timeout(env: Mapping[str, str]) -> float:
    """POSTWIRE_DNS_TIMEOUT_SECONDS: how long one lookup may take in all (5 s)."""
    return env_float(env, "POSTWIRE_DNS_TIMEOUT_SECONDS", 5.0, minimum=0.1)

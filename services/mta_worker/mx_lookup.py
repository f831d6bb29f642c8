"""MX resolution over DNS (dnspython's asyncio resolver), with a TTL cache and one query in
flight per name; the decisions are in `mx_rules`."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver

from services.mta_worker.mx_rules import (
    MAX_HOSTS,
    AddressAnswer,
    AddressPolicy,
    Exchange,
    MxAnswer,
    MxFailure,
    MxHost,
    MxHosts,
    Status,
    assemble,
    cache_ttl,
    dns_resolver,
    dns_timeout,
    invalid_domain,
    mx_port,
    negative_ttl,
    plan,
)

__all__ = ["AddressPolicy", "MxFailure", "MxHost", "MxHosts", "MxResolver", "mx_port"]

_Answer = MxAnswer | AddressAnswer
_Key = tuple[str, str]


class MxResolver:
    """`resolve(domain)` gives the hosts and checked addresses to try, or why not to try.

    Raw answers are cached for their TTL (negative ones for their SOA minimum), so a burst to
    one domain costs one query per name while each call still shuffles equal preferences
    afresh. Failed lookups are not cached: the next message asks again.
    """

    def __init__(
        self,
        *,
        nameserver: tuple[str, int] | None,
        timeout: float,
        allow: AddressPolicy,
        max_hosts: int = MAX_HOSTS,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
    ) -> None:
        # configure=False with a nameserver given (tests, split-horizon setups): never read
        # /etc/resolv.conf, so the answers come from that server alone.
        self._resolver = dns.asyncresolver.Resolver(configure=nameserver is None)
        if nameserver is not None:
            self._resolver.nameservers = [nameserver[0]]
            self._resolver.port = nameserver[1]
        self._resolver.lifetime = timeout
        self._resolver.cache = None  # ours keeps negative answers too, and clamps TTLs
        self._allow = allow
        self._max_hosts = max_hosts
        self._rng = rng or random.Random()
        self._clock = clock
        self._max_entries = max_entries
        self._cache: dict[_Key, tuple[float, _Answer]] = {}
        self._in_flight: dict[_Key, asyncio.Task[_Answer]] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MxResolver:
        """POSTWIRE_DNS_RESOLVER, POSTWIRE_DNS_TIMEOUT_SECONDS and POSTWIRE_MX_ALLOW_PRIVATE."""
        return cls(nameserver=dns_resolver(env), timeout=dns_timeout(env), allow=AddressPolicy.from_env(env))

    async def resolve(self, domain: str) -> MxHosts | MxFailure:
        try:
            # The A-label form: what is asked, cached and handed on (TLS names, logs).
            name = dns.name.from_text(domain.strip().rstrip(".")).to_text(omit_final_dot=True).lower()
        except (dns.exception.DNSException, UnicodeError):
            return invalid_domain(domain)
        if name == "." or "\\" in name:  # empty, or characters no host name can have
            return invalid_domain(domain)
        mx = await self._lookup(name, "MX")
        assert isinstance(mx, MxAnswer)
        planned = plan(name, mx, self._rng, max_hosts=self._max_hosts)
        if isinstance(planned, MxFailure):
            return planned
        answers = await asyncio.gather(*(self._addresses(e.name) for e in planned.exchanges))
        return assemble(name, planned, answers, self._allow)

    async def _addresses(self, host: str) -> tuple[AddressAnswer, AddressAnswer]:
        a, aaaa = await asyncio.gather(self._lookup(host, "A"), self._lookup(host, "AAAA"))
        assert isinstance(a, AddressAnswer) and isinstance(aaaa, AddressAnswer)
        return a, aaaa

    async def _lookup(self, name: str, rdtype: str) -> _Answer:
        key = (name, rdtype)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.create_task(self._query(name, rdtype))
            self._in_flight[key] = task
            task.add_done_callback(lambda _: self._in_flight.pop(key, None))
        # A caller that is cancelled (its delivery shut down) must not cancel the query that
        # other callers of the same name are waiting for.
        return await asyncio.shield(task)

    async def _query(self, name: str, rdtype: str) -> _Answer:
        answer = await self._ask(name, rdtype)
        if answer.status is not Status.FAILED:
            if len(self._cache) >= self._max_entries:
                now = self._clock()
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                if len(self._cache) >= self._max_entries:
                    self._cache.clear()
            self._cache[(name, rdtype)] = (self._clock() + answer.ttl, answer)
        return answer

    async def _ask(self, name: str, rdtype: str) -> _Answer:
        make = MxAnswer if rdtype == "MX" else AddressAnswer
        try:
            result = await self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN as exc:
            responses = list(exc.responses().values())  # type: ignore[no-untyped-call]  # dnspython leaves it unannotated
            return make(Status.NXDOMAIN, ttl=negative_ttl(_soa(responses[0] if responses else None)))
        except dns.resolver.NoAnswer as exc:
            return make(Status.NODATA, ttl=negative_ttl(_soa(exc.response())))  # type: ignore[no-untyped-call]  # as above
        except dns.exception.Timeout:
            return make(Status.FAILED, detail="timed out")
        except dns.resolver.NoNameservers:
            return make(Status.FAILED, detail="no name server answered (SERVFAIL or refused)")
        except (dns.exception.DNSException, OSError) as exc:
            return make(Status.FAILED, detail=type(exc).__name__)
        ttl = cache_ttl(result.chaining_result.minimum_ttl)
        if rdtype == "MX":
            exchanges = tuple(
                Exchange(r.preference, "" if r.exchange == dns.name.root else r.exchange.to_text(True))
                for r in result
            )
            return MxAnswer(Status.FOUND, exchanges, ttl=ttl)
        return AddressAnswer(Status.FOUND, tuple(r.address for r in result), ttl=ttl)


def _soa(response: dns.message.Message | None) -> tuple[int, int] | None:
    if response is None:
        return None
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return rrset.ttl, rrset[0].minimum
    return None

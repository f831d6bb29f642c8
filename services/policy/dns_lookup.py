"""DNS lookups for domain verification (dnspython), against a configurable resolver."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.resolver

from services.policy.domains import DnsAnswer, Record

__all__ = ["DnsLookup"]


class DnsLookup:
    def __init__(self, nameserver: tuple[str, int] | None, *, timeout: float) -> None:
        # configure=False: with a nameserver given (tests, split-horizon setups), never read
        # /etc/resolv.conf, so the answers come from that server alone.
        self._resolver = dns.asyncresolver.Resolver(configure=nameserver is None)
        if nameserver is not None:
            self._resolver.nameservers = [nameserver[0]]
            self._resolver.port = nameserver[1]
        self._resolver.lifetime = timeout
        self._resolver.cache = None  # a re-check after publishing must see the new record

    async def answers(self, records: Sequence[Record]) -> dict[str, DnsAnswer]:
        wanted = sorted({(r.type, r.name) for r in records})
        results = await asyncio.gather(*(self._one(rtype, name) for rtype, name in wanted))
        return {f"{rtype} {name}": answer for (rtype, name), answer in zip(wanted, results, strict=True)}

    async def _one(self, rtype: str, name: str) -> DnsAnswer:
        try:
            answer = await self._resolver.resolve(name, rtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return DnsAnswer(missing=True)
        except (dns.exception.DNSException, OSError):
            # Timeouts, SERVFAIL (NoNameservers) and the like: not an answer about the record.
            return DnsAnswer(failed=True)
        if rtype == "TXT":
            values = tuple(b"".join(r.strings).decode("utf-8", "replace") for r in answer)
        else:
            values = tuple(r.target.to_text().rstrip(".").lower() for r in answer)
        return DnsAnswer(values=values)

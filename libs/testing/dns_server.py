"""A loopback DNS server with zones a test can change while it runs (dnslib), so domain
verification and MX resolution are tested against real DNS packets rather than a stubbed
resolver."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from dnslib import AAAA, CNAME, MX, QTYPE, RCODE, RR, SOA, TXT, A, DNSError
from dnslib.server import BaseResolver, DNSServer

from libs.embedded.ports import free_port

__all__ = ["LoopbackDns"]

# Longer chains are a loop (a test's mistake); real resolvers give up about here too.
_MAX_CNAME_CHAIN = 8


class _Zones(BaseResolver):  # type: ignore[misc]  # dnslib is untyped, so its base class is Any
    def __init__(self, negative_ttl: int) -> None:
        self.lock = threading.Lock()
        self.records: dict[tuple[str, str], list[str]] = {}
        self.ttls: dict[tuple[str, str], int] = {}
        self.servfail: set[str] = set()
        self.hung: set[str] = set()
        self.asked: Counter[tuple[str, str]] = Counter()
        self.negative_ttl = negative_ttl

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            self.asked[(name, qtype)] += 1
            if name in self.hung:
                # dnslib's handler drops the query without a reply: the client times out.
                raise DNSError(f"not answering {name}")
            if name in self.servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            owner = request.q.qname
            # Follow CNAMEs as a recursive resolver would, so the client gets the whole chain.
            for _ in range(_MAX_CNAME_CHAIN):
                if qtype == "CNAME" or (name, qtype) in self.records or (name, "CNAME") not in self.records:
                    break
                target = self.records[(name, "CNAME")][0]
                reply.add_answer(
                    RR(owner, QTYPE.CNAME, rdata=CNAME(target + "."), ttl=self.ttls[(name, "CNAME")])
                )
                name, owner = target.rstrip(".").lower(), target.rstrip(".") + "."
            known = any(n == name for n, _ in self.records)
            values = list(self.records.get((name, qtype), ()))
            ttl = self.ttls.get((name, qtype), 1)
        if not known:
            reply.header.rcode = RCODE.NXDOMAIN
        for value in values:
            reply.add_answer(RR(owner, getattr(QTYPE, qtype), rdata=_rdata(qtype, value), ttl=ttl))
        if not values:
            # RFC 2308: a negative answer carries its zone's SOA; its minimum is how long the
            # answer may be cached. The root is an ancestor of every name, so one SOA serves all.
            soa = SOA("ns.loopback.", "hostmaster.loopback.", (1, 60, 60, 60, self.negative_ttl))
            reply.add_auth(RR(".", QTYPE.SOA, rdata=soa, ttl=self.negative_ttl))
        return reply


def _rdata(qtype: str, value: str) -> Any:
    if qtype == "TXT":
        # One TXT record of several strings: DKIM keys are longer than 255 bytes.
        return TXT([value[i : i + 255] for i in range(0, len(value), 255)] or [""])
    if qtype == "CNAME":
        return CNAME(value + ".")
    if qtype == "MX":
        preference, _, target = value.partition(" ")
        # "0 ." is RFC 7505's null MX: the root as the target.
        return MX(target.strip().rstrip(".") + "." if target.strip() != "." else ".", int(preference))
    if qtype == "A":
        return A(value)
    if qtype == "AAAA":
        return AAAA(value)
    raise ValueError(f"LoopbackDns cannot publish {qtype} records")


class LoopbackDns:
    """UDP and TCP on 127.0.0.1.

    `set` publishes (TXT, CNAME, MX as "10 mx.example.org" or "0 .", A, AAAA), `clear`
    unpublishes, `fail` answers SERVFAIL, `hang` never answers, `recover` undoes both, and
    `queries` counts what clients asked. Negative answers carry an SOA whose minimum is
    `negative_ttl` seconds.
    """

    def __init__(self, *, negative_ttl: int = 1) -> None:
        self.port = free_port()
        self._zones = _Zones(negative_ttl)
        self._servers = [
            DNSServer(self._zones, port=self.port, address="127.0.0.1", tcp=tcp, logger=_Quiet())
            for tcp in (False, True)
        ]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        for server in self._servers:
            server.start_thread()

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
            # dnslib's stop() shuts the loop down but leaves the socket open.
            server.server.server_close()

    def set(self, rtype: str, name: str, *values: str, ttl: int = 1) -> None:
        for value in values:
            _rdata(rtype, value)  # a malformed value fails here, in the test, not in the server
        with self._zones.lock:
            self._zones.records[(name.lower(), rtype)] = list(values)
            self._zones.ttls[(name.lower(), rtype)] = ttl

    def clear(self, rtype: str, name: str) -> None:
        with self._zones.lock:
            self._zones.records.pop((name.lower(), rtype), None)
            self._zones.ttls.pop((name.lower(), rtype), None)

    def fail(self, name: str) -> None:
        with self._zones.lock:
            self._zones.servfail.add(name.lower())

    def hang(self, name: str) -> None:
        """Stop answering any query for `name`, so clients time out."""
        with self._zones.lock:
            self._zones.hung.add(name.lower())

    def recover(self, name: str) -> None:
        """Answer `name` normally again after `fail` or `hang`."""
        with self._zones.lock:
            self._zones.servfail.discard(name.lower())
            self._zones.hung.discard(name.lower())

    def queries(self, name: str, rtype: str) -> int:
        """How many `rtype` queries for `name` reached this server."""
        with self._zones.lock:
            return self._zones.asked[(name.lower(), rtype)]


class _Quiet:
    """dnslib logs every query to stdout by default."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None

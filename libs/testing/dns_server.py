"""A loopback DNS server with zones a test can change while it runs (dnslib), so domain
verification is tested against real DNS packets rather than a stubbed resolver."""

from __future__ import annotations

import threading
from typing import Any

from dnslib import CNAME, QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSServer

from libs.embedded.postgres import free_port

__all__ = ["LoopbackDns"]


class _Zones(BaseResolver):  # type: ignore[misc]
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[tuple[str, str], list[str]] = {}
        self.servfail: set[str] = set()

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            if name in self.servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            known = any(n == name for n, _ in self.records)
            values = list(self.records.get((name, qtype), ()))
        if not known:
            reply.header.rcode = RCODE.NXDOMAIN
        for value in values:
            if qtype == "TXT":
                # One TXT record of several strings: DKIM keys are longer than 255 bytes.
                chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(chunks), ttl=1))
            elif qtype == "CNAME":
                reply.add_answer(RR(request.q.qname, QTYPE.CNAME, rdata=CNAME(value + "."), ttl=1))
        return reply


class LoopbackDns:
    """UDP and TCP on 127.0.0.1; `set` publishes, `clear` unpublishes, `fail` answers SERVFAIL."""

    def __init__(self) -> None:
        self.port = free_port()
        self._zones = _Zones()
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

    def set(self, rtype: str, name: str, *values: str) -> None:
        with self._zones.lock:
            self._zones.records[(name.lower(), rtype)] = list(values)

    def clear(self, rtype: str, name: str) -> None:
        with self._zones.lock:
            self._zones.records.pop((name.lower(), rtype), None)

    def fail(self, name: str) -> None:
        with self._zones.lock:
            self._zones.servfail.add(name.lower())


class _Quiet:
    """dnslib logs every query to stdout by default."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None

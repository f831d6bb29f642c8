"""Outbound HTTP to tenant-supplied URLs (webhook endpoints), with the SSRF defence in one place.

Each request resolves the host once, refuses it unless every address is allowed by the
AddressPolicy (libs/public_addresses: public only, unless a dev setting says otherwise), and then
connects to the checked address itself while the Host header, TLS SNI and certificate verification
keep the name. The client never resolves the name again, so DNS rebinding cannot swap the address
between the check and the connection. Redirects are returned, never followed; the whole request
(DNS, connect, TLS, response) has one deadline, and the response body is read up to a cap.

libs/http1 does the HTTP (h11 over asyncio streams; httpx cost ~40 % of the events service's CPU
for one POST per message): it connects to the address and verifies the certificate against the
name given as `server_hostname` (SNI too). Each (scheme, address, port, host name) gets its own
pool of kept-alive connections: a connection verified for one name is never reused for another.
The CA bundle is certifi's, as it was under httpx."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import certifi
import dns.asyncresolver
import dns.exception
import dns.resolver

from libs.config import env_float, env_host_port
from libs.http1 import HttpFailed, OriginPool
from libs.outbound_url import HttpRefused, OutboundUrl, parse_outbound_url
from libs.public_addresses import AddressPolicy

__all__ = ["GuardedHttp", "HttpRefused", "HttpResponse", "HttpTimedOut"]

ALLOW_PRIVATE_VARIABLE = "POSTWIRE_WEBHOOK_ALLOW_PRIVATE"
USER_AGENT = "Postwire-Webhooks/1"
# Idle clients kept for reuse; past this the least recently used idle one is closed.
_MAX_CLIENTS = 64
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*$")
# Framing and routing are ours to set: a caller's Host could point the request at another
# virtual host than the one whose certificate was checked.
_OURS = frozenset({"host", "content-length", "transfer-encoding", "connection", "te", "upgrade"})

Key = tuple[str, str, int, str]


class HttpTimedOut(HttpRefused):
    """The request did not complete (DNS, connect, TLS, response and body) within the timeout."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes  # at most max_response_bytes; the rest is discarded unread
    latency: float  # seconds from the call to the end of the body read, DNS included
    # Lower-case names (Retry-After, Location); a repeated header's values joined with ", ".
    headers: Mapping[str, str] = field(default_factory=dict)


class GuardedHttp:
    def __init__(
        self,
        *,
        allow: AddressPolicy,
        timeout: float = 15.0,
        max_response_bytes: int = 64 * 1024,
        allow_plain_http: bool = False,
        resolver: tuple[str, int] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`ssl_context` replaces the public CA bundle (tests trust their own CA)."""
        self._allow = allow
        self._timeout = timeout
        self._max_response_bytes = max_response_bytes
        self._allow_plain_http = allow_plain_http
        self._resolver = dns.asyncresolver.Resolver(configure=resolver is None)
        if resolver is not None:
            self._resolver.nameservers = [resolver[0]]
            self._resolver.port = resolver[1]
        self._resolver.lifetime = timeout
        # A cached answer would outlive the TTL the checked address was given for; names are
        # resolved per request, as the guard's one truth.
        self._resolver.cache = None
        self._ssl = ssl_context or ssl.create_default_context(cafile=certifi.where())
        self._clients: OrderedDict[Key, OriginPool] = OrderedDict()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GuardedHttp:
        """POSTWIRE_WEBHOOK_ALLOW_PRIVATE (dev only: true or CIDRs; it also allows plain http),
        POSTWIRE_WEBHOOK_TIMEOUT_SECONDS (15), POSTWIRE_DNS_RESOLVER (host:port; empty: the
        system's resolvers)."""
        allow = AddressPolicy.from_env(env, name=ALLOW_PRIVATE_VARIABLE)
        resolver = None
        if env.get("POSTWIRE_DNS_RESOLVER", "").strip():
            resolver = env_host_port(env, "POSTWIRE_DNS_RESOLVER", "")
        return cls(
            allow=allow,
            timeout=env_float(env, "POSTWIRE_WEBHOOK_TIMEOUT_SECONDS", 15.0, minimum=0.1),
            allow_plain_http=allow.allow_all or bool(allow.allowed),
            resolver=resolver,
        )

    async def check_url(self, url: str) -> None:
        """HttpRefused unless `url` could be posted to now: scheme, userinfo, host form, and
        every address it resolves to."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._checked(url)
        except TimeoutError:
            raise HttpTimedOut(f"DNS did not answer within {self._timeout:g} s") from None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> HttpResponse:
        """POST `body` to `url` once. Any status is returned (3xx too: never followed); HttpRefused
        when the request was not allowed or did not complete, HttpTimedOut past the timeout."""
        started = time.monotonic()
        request_headers = _request_headers(headers)
        try:
            async with asyncio.timeout(self._timeout):
                target, address = await self._checked(url)
                return await self._send(target, address, body, request_headers, started)
        except TimeoutError:
            raise HttpTimedOut(f"no complete response within {self._timeout:g} s") from None

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            await client.aclose()

    async def _checked(self, url: str) -> tuple[OutboundUrl, str]:
        target = parse_outbound_url(url, allow_plain_http=self._allow_plain_http)
        addresses = [target.host] if target.ip_literal else await self._resolve(target.host)
        # Every address, not just the one we pick: a name that mixes public and internal
        # addresses is a rebinding attempt or a mistake, and neither should be half-followed.
        if not all(self._allow.permits(address) for address in addresses):
            raise HttpRefused(f"{target.host} resolves to an address Postwire does not connect to")
        # IPv4 first: many hosts publish AAAA records they do not serve from.
        addresses.sort(key=lambda address: ":" in address)
        return target, addresses[0]

    async def _resolve(self, host: str) -> list[str]:
        answers = await asyncio.gather(self._query(host, "A"), self._query(host, "AAAA"))
        addresses = [address for answer in answers for address in answer]
        if not addresses:
            raise HttpRefused(f"{host} has no address in DNS")
        return addresses

    async def _query(self, host: str, rdtype: str) -> list[str]:
        try:
            # Absolute name: a search domain must not turn "hooks" into an internal host.
            answer = await self._resolver.resolve(host + ".", rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout:
            raise HttpTimedOut(f"DNS did not answer for {host}") from None
        except dns.exception.DNSException as exc:
            raise HttpRefused(f"DNS lookup of {host} failed ({type(exc).__name__})") from None
        return [str(ipaddress.ip_address(record.address)) for record in answer]

    async def _send(
        self, target: OutboundUrl, address: str, body: bytes, headers: dict[str, str], started: float
    ) -> HttpResponse:
        headers["Host"] = target.host_header
        key = (target.scheme, address, target.port, target.host)
        client = self._client(key, target)
        client.in_flight += 1
        try:
            reply = await client.post(
                target.target, list(headers.items()), body, max_body=self._max_response_bytes
            )
        except HttpFailed as exc:
            raise HttpRefused(f"the request to {target.host} failed: {exc}") from None
        finally:
            client.in_flight -= 1
        joined: dict[str, str] = {}
        for name, value in reply.headers:
            joined[name] = f"{joined[name]}, {value}" if name in joined else value
        return HttpResponse(
            status=reply.status, body=reply.body, latency=time.monotonic() - started, headers=joined
        )

    def _client(self, key: Key, target: OutboundUrl) -> OriginPool:
        client = self._clients.get(key)
        if client is not None:
            self._clients.move_to_end(key)
            return client
        https = target.scheme == "https"
        client = OriginPool(
            key[1],
            target.port,
            ssl_context=self._ssl if https else None,
            # The name for SNI and verification; an IP literal is verified as itself.
            server_hostname=target.host if https else None,
            max_idle=4,
            keepalive_expiry=30.0,
        )
        self._evict()
        self._clients[key] = client
        return client

    def _evict(self) -> None:
        idle = [key for key, client in self._clients.items() if client.in_flight == 0]
        for key in idle[: max(0, len(self._clients) + 1 - _MAX_CLIENTS)]:
            client = self._clients.pop(key)
            # Closing an idle pool only closes sockets; no need to hold up the caller for it.
            task = asyncio.get_running_loop().create_task(client.aclose())
            _closing.add(task)
            task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()


def _request_headers(headers: Mapping[str, str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for name, value in headers.items():
        if not _HEADER_NAME.match(name) or not _HEADER_VALUE.match(value):
            raise HttpRefused(f"header {name!r} is not a valid HTTP header")
        if name.lower() not in _OURS:
            result[name] = value
    if not any(name.lower() == "accept-encoding" for name in result):
        result["Accept-Encoding"] = "identity"
    # Some firewalls in front of endpoints refuse requests without one (httpx used to send its own).
    if not any(name.lower() == "user-agent" for name in result):
        result["User-Agent"] = USER_AGENT
    return result

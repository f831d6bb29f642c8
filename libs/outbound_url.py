"""Parsing a tenant-supplied URL for an outbound request (webhook endpoints): which scheme, host
name, port and request target it names, or why Postwire refuses it. Pure: no DNS, no sockets.

The host is kept apart from the address we connect to (libs/http_guard resolves it once and checks
the address), so the only things taken from the URL are the name for the Host header and TLS, the
port and the path. Forms that resolvers and browsers read differently (`0x7f.1`, `2130706433`,
zone ids, userinfo) are refused here rather than guessed at."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["MAX_URL_LENGTH", "HttpRefused", "OutboundUrl", "parse_outbound_url"]

# Longer URLs are no webhook endpoint anyone means; browsers and proxies start failing near here.
MAX_URL_LENGTH = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}
# WHATWG URL reads a host whose last label is numeric as an IPv4 address (0x7f.1, 2130706433,
# 127.1); resolvers read it as a name. Neither reading is safe to pick, so such hosts are refused.
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_FORBIDDEN_CHARACTERS = re.compile(r"[\x00-\x20\x7f\\]")


class HttpRefused(Exception):
    """Postwire did not make the request, or it did not complete: the URL or the address it
    resolves to is not allowed, DNS failed, the connection failed or timed out. `reason` says which
    in words safe to show the tenant (never the full URL: its query may hold a secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class OutboundUrl:
    scheme: str  # "https" or "http"
    host: str  # lower-case ASCII name (IDNA) or an IP address without brackets
    port: int
    target: str  # path and query, as sent on the request line ("/" at least)

    @property
    def ip_literal(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def parse_outbound_url(url: str, *, allow_plain_http: bool = False) -> OutboundUrl:
    """The parts of `url`, or HttpRefused: a scheme other than https (or http when allowed),
    userinfo, a missing or malformed host, a bad port, control characters or spaces."""
    if len(url) > MAX_URL_LENGTH:
        raise HttpRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if _FORBIDDEN_CHARACTERS.search(url):
        raise HttpRefused("the URL contains spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise HttpRefused("the URL is malformed or its port is out of range") from None
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if allow_plain_http else ("https",)
    if scheme not in allowed:
        raise HttpRefused(f"the URL scheme must be {' or '.join(allowed)}")
    if "@" in parts.netloc:
        raise HttpRefused("the URL must not contain a user name or password")
    host = _host(parts.netloc, parts.hostname)
    if port == 0:
        raise HttpRefused("the URL port is out of range")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return OutboundUrl(scheme=scheme, host=host, port=port or _DEFAULT_PORTS[scheme], target=target)


def _host(netloc: str, hostname: str | None) -> str:
    if not hostname:
        raise HttpRefused("the URL has no host")
    if netloc.startswith("["):
        # urlsplit has checked the brackets hold an IPv6 address; a zone id (%eth0) names an
        # interface of this machine, which no tenant may choose.
        if "%" in hostname:
            raise HttpRefused("the URL host must not carry an IPv6 zone id")
        try:
            return str(ipaddress.IPv6Address(hostname))
        except ValueError:
            raise HttpRefused("the URL host is not a valid IPv6 address") from None
    name = hostname.removesuffix(".")
    try:
        return str(ipaddress.IPv4Address(name))
    except ValueError:
        pass
    try:
        name = name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise HttpRefused("the URL host is not a valid domain name") from None
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels) or len(name) > 253:
        raise HttpRefused("the URL host is not a valid domain name")
    if _NUMERIC_LABEL.match(labels[-1]):
        raise HttpRefused("the URL host looks like an IP address but is not one in dotted form")
    return name

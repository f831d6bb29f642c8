"""Which tenant-supplied URLs an outbound request may be made to, decided before any DNS."""

from __future__ import annotations

import pytest

from libs.config import ConfigError
from libs.http_guard import GuardedHttp
from libs.outbound_url import HttpRefused, OutboundUrl, parse_outbound_url
from libs.public_addresses import AddressPolicy


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://hooks.example.com/pw", OutboundUrl("https", "hooks.example.com", 443, "/pw")),
        ("HTTPS://Hooks.Example.COM", OutboundUrl("https", "hooks.example.com", 443, "/")),
        (
            "https://hooks.example.com.:8443/a/b?x=1&y=2#frag",
            OutboundUrl("https", "hooks.example.com", 8443, "/a/b?x=1&y=2"),
        ),
        ("https://bücher.example/h", OutboundUrl("https", "xn--bcher-kva.example", 443, "/h")),
        ("https://93.184.216.34/h", OutboundUrl("https", "93.184.216.34", 443, "/h")),
        ("https://[2606:2800:220:1::]:9000/", OutboundUrl("https", "2606:2800:220:1::", 9000, "/")),
        ("https://[::ffff:127.0.0.1]/", OutboundUrl("https", "::ffff:7f00:1", 443, "/")),
    ],
)
def test_accepted_urls_name_host_port_and_target(url: str, expected: OutboundUrl) -> None:
    assert parse_outbound_url(url) == expected


def test_host_header_carries_the_port_only_when_it_is_not_the_default() -> None:
    assert parse_outbound_url("https://h.example/").host_header == "h.example"
    assert parse_outbound_url("https://h.example:8443/").host_header == "h.example:8443"
    assert parse_outbound_url("https://[2001:db8::1]:8443/").host_header == "[2001:db8::1]:8443"
    assert parse_outbound_url("http://h.example:80/", allow_plain_http=True).host_header == "h.example"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/", "scheme must be https"),
        ("file:///etc/passwd", "scheme must be https"),
        ("gopher://hooks.example.com/", "scheme must be https"),
        ("ftp://hooks.example.com/", "scheme must be https"),
        ("hooks.example.com/pw", "scheme must be https"),
        ("https://user:pass@hooks.example.com/", "user name or password"),
        ("https://token@hooks.example.com/", "user name or password"),
        ("https:///path", "no host"),
        ("https://hooks.example.com:99999/", "port is out of range"),
        ("https://hooks.example.com:0/", "port is out of range"),
        ("https://hooks.example.com:x/", "port is out of range"),
        ("https://hooks example.com/", "spaces"),
        ("https://hooks.example.com/\r\nX-Injected: 1", "control characters"),
        ("https://hooks.example.com\\@evil.example/", "backslashes"),
        ("https://0x7f.1/", "dotted form"),
        ("https://2130706433/", "dotted form"),
        ("https://127.1/", "dotted form"),
        ("https://0/", "dotted form"),
        ("https://[fe80::1%25eth0]/", "zone id"),
        ("https://-bad-.example/", "not a valid domain name"),
        ("https://a..example/", "not a valid domain name"),
        ("https://under_score.example/", "not a valid domain name"),
        ("https://h.example/" + "a" * 2100, "longer than 2048"),
    ],
)
def test_refused_urls_say_why(url: str, why: str) -> None:
    with pytest.raises(HttpRefused) as refused:
        parse_outbound_url(url)
    assert why in refused.value.reason


def test_plain_http_only_when_allowed() -> None:
    assert parse_outbound_url("http://h.example/", allow_plain_http=True).port == 80
    with pytest.raises(HttpRefused, match="https or http"):
        parse_outbound_url("ftp://h.example/", allow_plain_http=True)


def test_refusal_reason_never_repeats_the_url() -> None:
    # The query string of a webhook URL is where tenants put their own secrets.
    url = "ftp://h.example/hook?token=s3cret-value"
    with pytest.raises(HttpRefused) as refused:
        parse_outbound_url(url)
    assert "s3cret" not in refused.value.reason


async def test_from_env_defaults_block_private_and_plain_http() -> None:
    guard = GuardedHttp.from_env({})
    try:
        with pytest.raises(HttpRefused, match="scheme must be https"):
            await guard.check_url("http://93.184.216.34/")
        with pytest.raises(HttpRefused, match="does not connect to"):
            await guard.check_url("https://10.0.0.5/")
    finally:
        await guard.close()


async def test_from_env_dev_allowance_admits_its_ranges_and_plain_http() -> None:
    guard = GuardedHttp.from_env(
        {
            "POSTWIRE_ENV": "dev",
            "POSTWIRE_WEBHOOK_ALLOW_PRIVATE": "127.0.0.0/8",
            "POSTWIRE_WEBHOOK_TIMEOUT_SECONDS": "2",
        }
    )
    try:
        await guard.check_url("http://127.0.0.1:9/")
        with pytest.raises(HttpRefused, match="does not connect to"):
            await guard.check_url("http://10.0.0.5/")
    finally:
        await guard.close()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"POSTWIRE_WEBHOOK_ALLOW_PRIVATE": "true"}, "POSTWIRE_WEBHOOK_ALLOW_PRIVATE"),
        ({"POSTWIRE_WEBHOOK_TIMEOUT_SECONDS": "soon"}, "POSTWIRE_WEBHOOK_TIMEOUT_SECONDS"),
        ({"POSTWIRE_DNS_RESOLVER": "127.0.0.1"}, "POSTWIRE_DNS_RESOLVER"),
    ],
)
def test_from_env_rejects_bad_settings_naming_them(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        GuardedHttp.from_env(env)


@pytest.mark.parametrize(
    "url",
    [
        # RELIABILITY.md G1, as literals: refused before any DNS or connection.
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://0/",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/",
        "http://[fd00::1]/",
        "http://[64:ff9b::a00:5]/",
        "http://[2002:a00:5::]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
    ],
)
async def test_internal_literals_are_refused_even_with_plain_http_allowed(url: str) -> None:
    guard = GuardedHttp(allow=AddressPolicy(), allow_plain_http=True, timeout=1.0)
    try:
        with pytest.raises(HttpRefused):
            await guard.check_url(url)
        with pytest.raises(HttpRefused):
            await guard.post(url, b"{}", {})
    finally:
        await guard.close()

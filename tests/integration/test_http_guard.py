"""Outbound HTTP to tenant URLs (libs/http_guard) against real servers on loopback and a real DNS
server: what arrives at the receiver, what is refused before any connection, and the bounds on
time and response size."""

from __future__ import annotations

import ipaddress
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from libs.http_guard import GuardedHttp, HttpRefused, HttpTimedOut
from libs.public_addresses import AddressPolicy
from libs.testing.dns_server import LoopbackDns
from libs.testing.test_ca import TestCa
from libs.testing.webhook_receiver import Reply, WebhookReceiver

# Receivers run on loopback; every other private or special range stays refused.
LOOPBACK_ONLY = AddressPolicy.from_env(
    {"POSTWIRE_ENV": "dev", "POSTWIRE_WEBHOOK_ALLOW_PRIVATE": "127.0.0.0/8"},
    name="POSTWIRE_WEBHOOK_ALLOW_PRIVATE",
)


@pytest.fixture(scope="module")
def dns() -> Iterator[LoopbackDns]:
    server = LoopbackDns()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
async def guard(dns: LoopbackDns) -> AsyncIterator[GuardedHttp]:
    http = GuardedHttp(
        allow=LOOPBACK_ONLY, allow_plain_http=True, timeout=5.0, resolver=("127.0.0.1", dns.port)
    )
    yield http
    await http.close()


def _name(dns: LoopbackDns, *addresses: str) -> str:
    """A fresh name only the loopback DNS knows (the system resolver cannot find it)."""
    name = f"h{uuid.uuid4().hex[:12]}.test"
    v4 = [a for a in addresses if ":" not in a]
    v6 = [ipaddress.IPv6Address(a).exploded for a in addresses if ":" in a]  # dnslib reads no dotted tail
    if v4:
        dns.set("A", name, *v4, ttl=0)
    if v6:
        dns.set("AAAA", name, *v6, ttl=0)
    return name


async def test_post_arrives_with_host_headers_and_body_intact(
    guard: GuardedHttp, receiver: WebhookReceiver, dns: LoopbackDns
) -> None:
    name = _name(dns, "127.0.0.1")
    body = '{"type":"email.delivered","data":{"note":"café"}}'.encode()
    response = await guard.post(
        receiver.url("/hooks/pw?tenant=t1", host=name),
        body,
        {"Content-Type": "application/json", "webhook-id": "evt_1", "Host": "evil.example"},
    )
    assert response.status == 200
    assert response.latency > 0
    (request,) = receiver.requests()
    assert request.method == "POST"
    assert request.path == "/hooks/pw?tenant=t1"
    assert request.body == body
    # The caller's Host is ignored: the request names the host that was checked.
    assert request.headers["host"] == f"{name}:{receiver.port}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == "evt_1"
    assert request.headers["content-length"] == str(len(body))
    assert request.headers["user-agent"] == "Postwire-Webhooks/1"


async def test_https_verifies_the_certificate_against_the_name_not_the_address(dns: LoopbackDns) -> None:
    ca = TestCa()
    name = _name(dns, "127.0.0.1")
    guard = GuardedHttp(
        allow=LOOPBACK_ONLY, timeout=5.0, resolver=("127.0.0.1", dns.port), ssl_context=ca.client_context()
    )
    try:
        with WebhookReceiver(ssl_context=ca.server_context(name)) as receiver:
            response = await guard.post(receiver.url("/h", host=name), b"{}", {})
            assert response.status == 200
            (request,) = receiver.requests()
            assert request.tls and request.headers["host"] == f"{name}:{receiver.port}"
        # The same address with a certificate for another name is refused, as is an unknown CA.
        with WebhookReceiver(ssl_context=ca.server_context("other.test")) as wrong_name:
            with pytest.raises(HttpRefused, match="CERTIFICATE_VERIFY_FAILED"):
                await guard.post(wrong_name.url("/h", host=name), b"{}", {})
            assert wrong_name.requests() == []
        with WebhookReceiver(ssl_context=TestCa("Untrusted").server_context(name)) as untrusted:
            with pytest.raises(HttpRefused, match="CERTIFICATE_VERIFY_FAILED"):
                await guard.post(untrusted.url("/h", host=name), b"{}", {})
            assert untrusted.requests() == []
    finally:
        await guard.close()


async def test_redirect_is_returned_not_followed(guard: GuardedHttp, receiver: WebhookReceiver) -> None:
    receiver.script("/old", Reply(302, headers={"Location": receiver.url("/new")}))
    response = await guard.post(receiver.url("/old"), b"{}", {})
    assert response.status == 302
    assert response.headers["location"] == receiver.url("/new")
    assert [r.path for r in receiver.requests()] == ["/old"]


async def test_slow_server_times_out_within_the_bound(dns: LoopbackDns, receiver: WebhookReceiver) -> None:
    guard = GuardedHttp(
        allow=LOOPBACK_ONLY, allow_plain_http=True, timeout=0.5, resolver=("127.0.0.1", dns.port)
    )
    receiver.script("/slow", Reply(200, delay=10))
    # Headers at once, then 1 KiB every 0.1 s for ~100 s: no single read is slow, the whole is.
    receiver.script("/drip", Reply(200, body_size=1024 * 1000, drip=0.1))
    try:
        for path in ("/slow", "/drip"):
            started = time.monotonic()
            with pytest.raises(HttpTimedOut, match=r"within 0\.5 s"):
                await guard.post(receiver.url(path), b"{}", {})
            # The 0.5 s bound, with slack for a busy machine; unbounded would be 10 s and ~100 s.
            assert time.monotonic() - started < 3.0
    finally:
        await guard.close()


async def test_huge_response_is_truncated_to_the_cap_without_reading_it(
    dns: LoopbackDns, receiver: WebhookReceiver
) -> None:
    guard = GuardedHttp(allow=LOOPBACK_ONLY, allow_plain_http=True, resolver=("127.0.0.1", dns.port))
    receiver.script("/big", Reply(200, body_size=1 << 30))
    try:
        started = time.monotonic()
        response = await guard.post(receiver.url("/big"), b"{}", {})
        assert response.status == 200
        assert response.body == b"x" * (64 * 1024)
        # Reading 1 GiB over loopback would take seconds; the cap stops after 64 KiB.
        assert time.monotonic() - started < 2.0
        # The next request gets its answer on a fresh connection, not the rest of that body.
        assert (await guard.post(receiver.url("/after"), b"{}", {})).body == b""
    finally:
        await guard.close()


@pytest.mark.parametrize(
    "address", ["10.0.0.5", "169.254.169.254", "::1", "100.64.0.1", "0.0.0.0", "::ffff:10.0.0.5", "fd00::1"]
)
async def test_internal_addresses_are_refused_as_literals_and_behind_names(
    guard: GuardedHttp, dns: LoopbackDns, address: str
) -> None:
    literal = f"[{address}]" if ":" in address else address
    name = _name(dns, address)
    for url in (f"http://{literal}:8080/h", f"http://{name}:8080/h", f"https://{name}/h"):
        with pytest.raises(HttpRefused, match="does not connect to"):
            await guard.post(url, b"{}", {})
        with pytest.raises(HttpRefused, match="does not connect to"):
            await guard.check_url(url)


async def test_a_name_mixing_allowed_and_internal_addresses_is_refused(
    guard: GuardedHttp, receiver: WebhookReceiver, dns: LoopbackDns
) -> None:
    name = _name(dns, "127.0.0.1", "10.0.0.5")
    with pytest.raises(HttpRefused, match="does not connect to"):
        await guard.post(receiver.url("/h", host=name), b"{}", {})
    assert receiver.connections == 0


async def test_plain_http_is_refused_unless_allowed(dns: LoopbackDns, receiver: WebhookReceiver) -> None:
    strict = GuardedHttp(allow=LOOPBACK_ONLY, resolver=("127.0.0.1", dns.port))
    try:
        with pytest.raises(HttpRefused, match="scheme must be https"):
            await strict.post(receiver.url("/h"), b"{}", {})
        with pytest.raises(HttpRefused, match="scheme must be https"):
            await strict.check_url(receiver.url("/h"))
    finally:
        await strict.close()
    assert receiver.connections == 0


async def test_the_name_is_resolved_once_and_the_connection_goes_to_that_address(
    guard: GuardedHttp, receiver: WebhookReceiver, dns: LoopbackDns
) -> None:
    # Only the loopback DNS knows the name: had anything after the check resolved it again (the
    # system resolver), the request could not have arrived.
    name = _name(dns, "127.0.0.1")
    assert (await guard.post(receiver.url("/h", host=name), b"{}", {})).status == 200
    assert dns.queries(name, "A") == 1
    assert receiver.requests()[0].peer == "127.0.0.1"
    # Rebinding to an internal address is caught on the next request, before any connection.
    dns.set("A", name, "10.0.0.5", ttl=0)
    with pytest.raises(HttpRefused, match="does not connect to"):
        await guard.post(receiver.url("/h", host=name), b"{}", {})
    assert dns.queries(name, "A") == 2
    assert len(receiver.requests()) == 1


async def test_dns_failures_are_refusals(guard: GuardedHttp, dns: LoopbackDns) -> None:
    with pytest.raises(HttpRefused, match="has no address in DNS"):
        await guard.post(f"http://nowhere-{uuid.uuid4().hex[:8]}.test/h", b"{}", {})
    failing = _name(dns, "127.0.0.1")
    dns.fail(failing)
    with pytest.raises(HttpRefused, match="DNS lookup of"):
        await guard.post(f"http://{failing}/h", b"{}", {})


async def test_dns_that_never_answers_times_out_within_the_bound(dns: LoopbackDns) -> None:
    guard = GuardedHttp(
        allow=LOOPBACK_ONLY, allow_plain_http=True, timeout=0.5, resolver=("127.0.0.1", dns.port)
    )
    hung = _name(dns, "127.0.0.1")
    dns.hang(hung)
    try:
        started = time.monotonic()
        with pytest.raises(HttpTimedOut):
            await guard.post(f"http://{hung}/h", b"{}", {})
        # The 0.5 s bound, with slack for a busy machine (a resolver's own default is 5 s or more).
        assert time.monotonic() - started < 3.0
    finally:
        await guard.close()


async def test_connection_refused_is_a_refusal(guard: GuardedHttp) -> None:
    with WebhookReceiver() as gone:
        url = gone.url("/h")
    with pytest.raises(HttpRefused, match="ConnectError"):
        await guard.post(url, b"{}", {})


async def test_connections_are_reused_per_address_port_and_host_name(
    guard: GuardedHttp, receiver: WebhookReceiver, dns: LoopbackDns
) -> None:
    first, second = _name(dns, "127.0.0.1"), _name(dns, "127.0.0.1")
    for _ in range(3):
        await guard.post(receiver.url("/h", host=first), b"{}", {})
    assert receiver.connections == 1
    # Same address and port, another name: its own connection (one verified for the other name
    # must not carry this one's requests).
    await guard.post(receiver.url("/h", host=second), b"{}", {})
    assert receiver.connections == 2
    assert [r.headers["host"].split(":")[0] for r in receiver.requests()] == [first] * 3 + [second]


async def test_invalid_header_is_refused_before_connecting(
    guard: GuardedHttp, receiver: WebhookReceiver
) -> None:
    with pytest.raises(HttpRefused, match="not a valid HTTP header"):
        await guard.post(receiver.url("/h"), b"{}", {"X-Evil": "a\r\nInjected: 1"})
    assert receiver.connections == 0


async def test_receiver_answers_its_script_in_order_then_the_default(
    guard: GuardedHttp, receiver: WebhookReceiver
) -> None:
    receiver.script("/s", Reply(503, body=b"busy"), Reply(410, headers={"Retry-After": "7"}))
    answers = [await guard.post(receiver.url("/s"), f"{i}".encode(), {}) for i in range(3)]
    assert [(a.status, a.body) for a in answers] == [(503, b"busy"), (410, b""), (200, b"")]
    assert answers[1].headers["retry-after"] == "7"
    arrived = await receiver.wait_for(3, path="/s", timeout=1)
    assert [r.body for r in arrived] == [b"0", b"1", b"2"]
    assert arrived[0].time <= arrived[1].time <= arrived[2].time


async def test_a_post_writes_no_log_line_and_reuses_its_connection(
    guard: GuardedHttp, receiver: WebhookReceiver, dns: LoopbackDns, caplog: pytest.LogCaptureFixture
) -> None:
    # One webhook per message: a log line per request (httpx's INFO "HTTP Request: POST …", the
    # URL included) cost the events service ~5 % of its CPU and said nothing an operator needs.
    name = _name(dns, "127.0.0.1")
    with caplog.at_level("DEBUG"):
        for i in range(5):
            response = await guard.post(receiver.url(f"/h?n={i}", host=name), b"{}", {})
            assert response.status == 200
    assert [r.getMessage() for r in caplog.records if r.levelno >= 20] == []
    assert receiver.connections == 1
    assert [r.path for r in receiver.requests()] == [f"/h?n={i}" for i in range(5)]

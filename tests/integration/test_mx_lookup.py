"""MX resolution against a real DNS server on loopback (real packets, dnspython's resolver): what
mta_worker will try for a recipient domain, and which domains bounce or defer before any SMTP."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from postwire.v1 import message_pb2

from libs.testing.dns_server import LoopbackDns
from services.mta_worker.mx_lookup import AddressPolicy, MxFailure, MxHost, MxHosts, MxResolver

HARD = message_pb2.BOUNCE_CATEGORY_HARD
SOFT = message_pb2.BOUNCE_CATEGORY_SOFT
CONFIG = message_pb2.BOUNCE_CATEGORY_CONFIG
# Tests deliver to sinks on loopback; 10.0.0.0/8 and the rest stay blocked.
LOOPBACK_ONLY = AddressPolicy.from_env(
    {"POSTWIRE_ENV": "dev", "POSTWIRE_MX_ALLOW_PRIVATE": "127.0.0.0/8,::1/128"}
)


@pytest.fixture(scope="module")
def dns() -> Iterator[LoopbackDns]:
    # Its own server: negative answers here carry an SOA minimum of 2 s, and hung names must not
    # slow down the suite's resolver.
    server = LoopbackDns(negative_ttl=2)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def domain() -> str:
    return f"d{uuid.uuid4().hex[:10]}.example"


def shape(failure: MxFailure) -> tuple[bool, int, str, int]:
    return failure.permanent, failure.code, failure.enhanced, failure.category


def resolver(dns: LoopbackDns, *, timeout: float = 2.0, allow: AddressPolicy = LOOPBACK_ONLY) -> MxResolver:
    return MxResolver(nameserver=("127.0.0.1", dns.port), timeout=timeout, allow=allow)


async def test_mx_hosts_in_preference_order_with_their_addresses(dns: LoopbackDns, domain: str) -> None:
    dns.set("MX", domain, f"20 mx2.{domain}", f"10 mx1.{domain}")
    dns.set("A", f"mx1.{domain}", "127.0.0.2")
    dns.set("AAAA", f"mx1.{domain}", "::1")
    dns.set("A", f"mx2.{domain}", "127.0.0.3", "127.0.0.4")
    assert await resolver(dns).resolve(domain) == MxHosts(
        (
            MxHost(f"mx1.{domain}", 10, ("127.0.0.2", "::1")),
            MxHost(f"mx2.{domain}", 20, ("127.0.0.3", "127.0.0.4")),
        )
    )


async def test_equal_preferences_are_shuffled_per_call_from_one_cached_answer(
    dns: LoopbackDns, domain: str
) -> None:
    names = [f"mx{i}.{domain}" for i in range(3)]
    dns.set("MX", domain, *(f"10 {n}" for n in names), ttl=300)
    for i, name in enumerate(names):
        dns.set("A", name, f"127.0.1.{i + 1}", ttl=300)
    mx = resolver(dns)
    firsts = set()
    for _ in range(40):
        hosts = await mx.resolve(domain)
        assert isinstance(hosts, MxHosts)
        assert sorted(h.name for h in hosts.hosts) == names
        firsts.add(hosts.hosts[0].name)
    assert firsts == set(names)
    assert dns.queries(domain, "MX") == 1


async def test_mx_domain_name_is_case_insensitive(dns: LoopbackDns, domain: str) -> None:
    dns.set("MX", domain, f"10 mx.{domain}")
    dns.set("A", f"mx.{domain}", "127.0.0.2")
    assert await resolver(dns).resolve(domain.upper() + ".") == MxHosts(
        (MxHost(f"mx.{domain}", 10, ("127.0.0.2",)),)
    )


async def test_no_mx_record_uses_the_domains_own_address(dns: LoopbackDns, domain: str) -> None:
    dns.set("A", domain, "127.0.0.5")
    assert await resolver(dns).resolve(domain) == MxHosts((MxHost(domain, 0, ("127.0.0.5",)),))


async def test_an_mx_target_behind_a_cname_is_followed(dns: LoopbackDns, domain: str) -> None:
    dns.set("MX", domain, f"10 mail.{domain}")
    dns.set("CNAME", f"mail.{domain}", f"real.{domain}")
    dns.set("A", f"real.{domain}", "127.0.0.6")
    assert await resolver(dns).resolve(domain) == MxHosts((MxHost(f"mail.{domain}", 10, ("127.0.0.6",)),))


async def test_null_mx_bounces_hard(dns: LoopbackDns, domain: str) -> None:
    dns.set("MX", domain, "0 .")
    dns.set("A", domain, "127.0.0.5")  # an address does not matter: the domain said no mail
    failure = await resolver(dns).resolve(domain)
    assert isinstance(failure, MxFailure)
    assert shape(failure) == (True, 556, "5.1.10", HARD)
    assert "recipient domain accepts no mail (null MX)" in failure.text


async def test_nxdomain_bounces_hard_naming_the_domain(dns: LoopbackDns, domain: str) -> None:
    failure = await resolver(dns).resolve(domain)
    assert isinstance(failure, MxFailure)
    assert shape(failure) == (True, 550, "5.1.2", HARD)
    assert domain in failure.text


async def test_no_mx_and_no_address_bounces_hard(dns: LoopbackDns, domain: str) -> None:
    dns.set("TXT", domain, "v=spf1 -all")  # the name exists, with neither MX nor A/AAAA
    failure = await resolver(dns).resolve(domain)
    assert isinstance(failure, MxFailure)
    assert (failure.permanent, failure.category) == (True, HARD)
    assert domain in failure.text


async def test_servfail_defers(dns: LoopbackDns, domain: str) -> None:
    dns.set("MX", domain, f"10 mx.{domain}")
    dns.fail(domain)
    failure = await resolver(dns).resolve(domain)
    assert isinstance(failure, MxFailure)
    assert shape(failure) == (False, 451, "4.4.3", SOFT)


async def test_a_server_that_never_answers_defers_within_the_timeout(dns: LoopbackDns, domain: str) -> None:
    dns.set("MX", domain, f"10 mx.{domain}")
    dns.hang(domain)
    started = time.monotonic()
    failure = await resolver(dns, timeout=0.5).resolve(domain)
    # The 0.5 s bound, with slack for a busy machine (a resolver's own default is 5 s or more).
    assert time.monotonic() - started < 3.0
    assert isinstance(failure, MxFailure)
    assert shape(failure) == (False, 451, "4.4.3", SOFT)
    assert dns.queries(domain, "MX") >= 1  # it was asked, and kept quiet


async def test_an_mx_host_that_does_not_resolve_is_skipped(dns: LoopbackDns, domain: str) -> None:
    dns.set("MX", domain, f"10 dead.{domain}", f"20 alive.{domain}")
    dns.set("A", f"dead.{domain}", "127.0.0.7")
    dns.hang(f"dead.{domain}")
    dns.set("A", f"alive.{domain}", "127.0.0.8")
    assert await resolver(dns, timeout=0.5).resolve(domain) == MxHosts(
        (MxHost(f"alive.{domain}", 20, ("127.0.0.8",)),)
    )
    dns.hang(f"alive.{domain}")
    failure = await resolver(dns, timeout=0.5).resolve(domain)
    assert isinstance(failure, MxFailure) and not failure.permanent


async def test_a_private_address_is_a_blocked_destination(dns: LoopbackDns, domain: str) -> None:
    dns.set("MX", domain, f"10 mx.{domain}")
    dns.set("A", f"mx.{domain}", "10.0.0.5")
    failure = await resolver(dns).resolve(domain)
    assert failure == MxFailure(
        permanent=True,
        code=550,
        enhanced="5.4.4",
        text=f"blocked destination: mx.{domain} resolves to 10.0.0.5 (private address)",
        category=CONFIG,
    )


async def test_the_metadata_address_and_loopback_are_blocked_without_an_allowance(
    dns: LoopbackDns, domain: str
) -> None:
    dns.set("MX", domain, f"10 a.{domain}", f"20 b.{domain}")
    dns.set("A", f"a.{domain}", "169.254.169.254")
    dns.set("A", f"b.{domain}", "127.0.0.1")
    failure = await resolver(dns, allow=AddressPolicy()).resolve(domain)
    assert isinstance(failure, MxFailure)
    assert (failure.permanent, failure.enhanced, failure.category) == (True, "5.4.4", CONFIG)
    assert "169.254.169.254" in failure.text


async def test_the_allowed_range_admits_only_its_addresses(dns: LoopbackDns, domain: str) -> None:
    dns.set("MX", domain, f"10 mx.{domain}")
    dns.set("A", f"mx.{domain}", "10.0.0.5", "127.0.0.9")
    assert await resolver(dns).resolve(domain) == MxHosts((MxHost(f"mx.{domain}", 10, ("127.0.0.9",)),))


async def test_a_changed_record_is_seen_after_its_ttl_and_not_before(dns: LoopbackDns, domain: str) -> None:
    dns.set("MX", domain, f"10 old.{domain}", ttl=2)
    dns.set("A", f"old.{domain}", "127.0.0.2", ttl=300)
    dns.set("A", f"new.{domain}", "127.0.0.3", ttl=300)
    mx = resolver(dns)
    first = await mx.resolve(domain)
    fetched = time.monotonic()
    dns.set("MX", domain, f"10 new.{domain}", ttl=2)
    assert await mx.resolve(domain) == first
    assert time.monotonic() - fetched < 2  # the check above ran within the TTL
    await asyncio.sleep(2.2)
    assert await mx.resolve(domain) == MxHosts((MxHost(f"new.{domain}", 10, ("127.0.0.3",)),))


async def test_a_negative_answer_is_cached_for_the_soa_minimum(dns: LoopbackDns, domain: str) -> None:
    mx = resolver(dns)
    assert isinstance(await mx.resolve(domain), MxFailure)
    fetched = time.monotonic()
    dns.set("A", domain, "127.0.0.5")
    still = await mx.resolve(domain)
    assert time.monotonic() - fetched < 2
    assert isinstance(still, MxFailure) and still.enhanced == "5.1.2"
    await asyncio.sleep(2.2)
    assert await mx.resolve(domain) == MxHosts((MxHost(domain, 0, ("127.0.0.5",)),))


async def test_concurrent_lookups_of_one_domain_share_one_query(dns: LoopbackDns, domain: str) -> None:
    dns.set("MX", domain, f"10 mx.{domain}")
    dns.set("A", f"mx.{domain}", "127.0.0.2")
    mx = resolver(dns)
    results = await asyncio.gather(*(mx.resolve(domain) for _ in range(20)))
    assert all(r == MxHosts((MxHost(f"mx.{domain}", 10, ("127.0.0.2",)),)) for r in results)
    assert dns.queries(domain, "MX") == 1
    assert dns.queries(f"mx.{domain}", "A") == 1


@pytest.mark.parametrize("bad", ["", ".", "a..example", "x" * 64 + ".example", "ex ample.example"])
async def test_a_domain_that_is_no_dns_name_bounces_hard(dns: LoopbackDns, bad: str) -> None:
    failure = await resolver(dns).resolve(bad)
    assert isinstance(failure, MxFailure)
    assert shape(failure) == (True, 550, "5.1.2", HARD)


async def test_an_internationalised_domain_is_asked_in_its_a_label_form(dns: LoopbackDns) -> None:
    label = f"bücher{uuid.uuid4().hex[:8]}"
    ascii_domain = f"{label.encode('idna').decode()}.example"
    dns.set("MX", ascii_domain, f"10 mx.{ascii_domain}")
    dns.set("A", f"mx.{ascii_domain}", "127.0.0.2")
    assert await resolver(dns).resolve(f"{label}.example") == MxHosts(
        (MxHost(f"mx.{ascii_domain}", 10, ("127.0.0.2",)),)
    )

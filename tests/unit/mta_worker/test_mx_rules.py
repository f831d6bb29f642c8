"""MX decisions (RFC 5321 §5.1, RFC 7505) on raw DNS answers: order, implicit and null MX, which
failures are permanent, and which addresses a worker may connect to."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from postwire.v1 import message_pb2

from libs.config import ConfigError
from services.mta_worker.mx_rules import (
    AddressAnswer,
    AddressPolicy,
    Exchange,
    MxAnswer,
    MxFailure,
    MxHost,
    MxHosts,
    Plan,
    Status,
    assemble,
    cache_ttl,
    dns_resolver,
    dns_timeout,
    is_public,
    mx_port,
    negative_ttl,
    plan,
)

HARD = message_pb2.BOUNCE_CATEGORY_HARD
SOFT = message_pb2.BOUNCE_CATEGORY_SOFT
CONFIG = message_pb2.BOUNCE_CATEGORY_CONFIG
BLOCK_ALL = AddressPolicy()
DEV = {"POSTWIRE_ENV": "dev"}


def mx(*records: tuple[int, str]) -> MxAnswer:
    return MxAnswer(Status.FOUND, tuple(Exchange(p, n) for p, n in records), ttl=300)


def found(*addresses: str) -> AddressAnswer:
    return AddressAnswer(Status.FOUND, addresses, ttl=300)


def shape(failure: MxFailure) -> tuple[bool, int, str, int]:
    return failure.permanent, failure.code, failure.enhanced, failure.category


NODATA = AddressAnswer(Status.NODATA, ttl=60)
FAILED = AddressAnswer(Status.FAILED, detail="timed out")


# -- order -------------------------------------------------------------------------------------


def test_exchanges_are_tried_in_preference_order() -> None:
    result = plan(
        "example.org",
        mx((30, "c.example.org"), (10, "a.example.org"), (20, "b.example.org")),
        random.Random(1),
    )
    assert result == Plan(
        (Exchange(10, "a.example.org"), Exchange(20, "b.example.org"), Exchange(30, "c.example.org")),
        implicit=False,
    )


def test_equal_preferences_are_shuffled_on_every_call_and_never_mixed_across_preferences() -> None:
    answer = mx(
        (20, "backup.example.org"), (10, "a.example.org"), (10, "b.example.org"), (10, "c.example.org")
    )
    rng = random.Random(7)
    firsts = set()
    for _ in range(60):
        result = plan("example.org", answer, rng)
        assert isinstance(result, Plan)
        assert [e.preference for e in result.exchanges] == [10, 10, 10, 20]
        assert result.exchanges[-1].name == "backup.example.org"
        firsts.add(result.exchanges[0].name)
    assert firsts == {"a.example.org", "b.example.org", "c.example.org"}


def test_at_most_five_hosts_are_kept() -> None:
    answer = mx(*((p, f"mx{p}.example.org") for p in range(8, 0, -1)))
    result = plan("example.org", answer, random.Random(1))
    assert isinstance(result, Plan)
    assert [e.preference for e in result.exchanges] == [1, 2, 3, 4, 5]


def test_mx_target_names_are_case_folded_and_lose_the_final_dot() -> None:
    result = plan("example.org", mx((10, "MX.Example.ORG.")), random.Random(1))
    assert result == Plan((Exchange(10, "mx.example.org"),), implicit=False)


# -- implicit MX, null MX, NXDOMAIN, failures ---------------------------------------------------


@pytest.mark.parametrize("answer", [MxAnswer(Status.NODATA, ttl=60), MxAnswer(Status.FOUND, (), ttl=60)])
def test_no_mx_records_means_the_domain_itself_at_preference_zero(answer: MxAnswer) -> None:
    assert plan("example.org", answer, random.Random(1)) == Plan((Exchange(0, "example.org"),), implicit=True)


@pytest.mark.parametrize("preference", [0, 10])
def test_a_null_mx_is_a_permanent_hard_failure(preference: int) -> None:
    result = plan("nomail.example", mx((preference, "")), random.Random(1))
    assert isinstance(result, MxFailure)
    assert shape(result) == (True, 556, "5.1.10", HARD)
    assert "recipient domain accepts no mail (null MX)" in result.text
    assert "nomail.example" in result.text


def test_a_root_target_beside_real_exchanges_is_ignored() -> None:
    result = plan("example.org", mx((0, ""), (10, "mx.example.org")), random.Random(1))
    assert result == Plan((Exchange(10, "mx.example.org"),), implicit=False)


def test_nxdomain_is_a_permanent_hard_failure_naming_the_domain() -> None:
    result = plan("nowhere.example", MxAnswer(Status.NXDOMAIN, ttl=60), random.Random(1))
    assert isinstance(result, MxFailure)
    assert shape(result) == (True, 550, "5.1.2", HARD)
    assert "nowhere.example" in result.text


def test_a_failed_mx_lookup_is_a_temporary_soft_failure() -> None:
    result = plan("slow.example", MxAnswer(Status.FAILED, detail="timed out"), random.Random(1))
    assert isinstance(result, MxFailure)
    assert shape(result) == (False, 451, "4.4.3", SOFT)
    assert "slow.example" in result.text
    assert "timed out" in result.text


# -- addresses ----------------------------------------------------------------------------------

TWO = Plan((Exchange(10, "a.example.org"), Exchange(20, "b.example.org")), implicit=False)


def test_hosts_keep_plan_order_with_ipv4_before_ipv6() -> None:
    result = assemble(
        "example.org",
        TWO,
        [(found("93.184.215.14"), found("2606:4700::1")), (found("198.51.44.1", "8.8.4.4"), NODATA)],
        BLOCK_ALL,
    )
    assert result == MxHosts(
        (
            MxHost("a.example.org", 10, ("93.184.215.14", "2606:4700::1")),
            MxHost("b.example.org", 20, ("198.51.44.1", "8.8.4.4")),
        )
    )


def test_a_host_whose_lookup_failed_is_skipped_when_another_resolves() -> None:
    result = assemble("example.org", TWO, [(FAILED, FAILED), (found("8.8.8.8"), NODATA)], BLOCK_ALL)
    assert result == MxHosts((MxHost("b.example.org", 20, ("8.8.8.8",)),))


def test_one_address_family_failing_still_uses_the_other() -> None:
    result = assemble("example.org", TWO, [(FAILED, found("2606:4700::1")), (NODATA, NODATA)], BLOCK_ALL)
    assert result == MxHosts((MxHost("a.example.org", 10, ("2606:4700::1",)),))


def test_every_host_failing_temporarily_is_a_temporary_failure() -> None:
    result = assemble("example.org", TWO, [(FAILED, FAILED), (FAILED, NODATA)], BLOCK_ALL)
    assert isinstance(result, MxFailure)
    assert shape(result) == (False, 451, "4.4.3", SOFT)


def test_no_mx_and_no_address_is_a_permanent_hard_failure() -> None:
    implicit = Plan((Exchange(0, "example.org"),), implicit=True)
    result = assemble("example.org", implicit, [(NODATA, NODATA)], BLOCK_ALL)
    assert isinstance(result, MxFailure)
    assert (result.permanent, result.code, result.category) == (True, 550, HARD)
    assert "example.org" in result.text
    assert "no MX" in result.text


def test_mx_hosts_without_any_address_are_a_permanent_hard_failure() -> None:
    result = assemble(
        "example.org", TWO, [(NODATA, NODATA), (AddressAnswer(Status.NXDOMAIN), NODATA)], BLOCK_ALL
    )
    assert isinstance(result, MxFailure)
    assert (result.permanent, result.code, result.category) == (True, 550, HARD)
    assert "a.example.org" in result.text and "b.example.org" in result.text


def test_a_destination_on_private_addresses_only_is_blocked_permanently_as_config() -> None:
    result = assemble(
        "example.org", TWO, [(found("10.0.0.5"), NODATA), (found("127.0.0.1"), NODATA)], BLOCK_ALL
    )
    assert result == MxFailure(
        permanent=True,
        code=550,
        enhanced="5.4.4",
        text="blocked destination: a.example.org resolves to 10.0.0.5 (private address)",
        category=CONFIG,
    )


def test_private_addresses_are_removed_and_the_global_ones_kept() -> None:
    result = assemble(
        "example.org",
        TWO,
        [(found("10.0.0.5", "8.8.8.8"), found("fd00::1")), (found("169.254.169.254"), NODATA)],
        BLOCK_ALL,
    )
    assert result == MxHosts((MxHost("a.example.org", 10, ("8.8.8.8",)),))


def test_a_temporary_failure_wins_over_a_blocked_host() -> None:
    # The failed host may resolve to a global address next time: defer rather than bounce.
    result = assemble("example.org", TWO, [(found("10.0.0.5"), NODATA), (FAILED, FAILED)], BLOCK_ALL)
    assert isinstance(result, MxFailure)
    assert not result.permanent


def test_an_allowed_range_lets_loopback_through_and_still_blocks_the_rest() -> None:
    policy = AddressPolicy.from_env({**DEV, "POSTWIRE_MX_ALLOW_PRIVATE": "127.0.0.0/8"})
    ok = assemble("example.org", TWO, [(found("127.0.0.2"), found("::1")), (NODATA, NODATA)], policy)
    assert ok == MxHosts((MxHost("a.example.org", 10, ("127.0.0.2",)),))
    blocked = assemble("example.org", TWO, [(found("10.0.0.5"), NODATA), (NODATA, NODATA)], policy)
    assert isinstance(blocked, MxFailure)
    assert (blocked.enhanced, blocked.category) == ("5.4.4", CONFIG)


BLOCKED = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.5",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "169.254.169.254",
    "169.254.0.1",
    "100.64.0.1",
    "100.127.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",
    "198.18.0.1",
    "::1",
    "::",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fec0::1",
    "ff02::1",
    "ff0e::1",
    "2001:db8::1",
    # IPv4 hidden in IPv6: mapped, 6to4 and NAT64 forms of private addresses.
    "::ffff:10.0.0.5",
    "::ffff:127.0.0.1",
    "2002:a00:5::1",
    "2002:7f00:1::1",
    "64:ff9b::a00:5",
    "64:ff9b::7f00:1",
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "142.250.27.26",
    "2606:4700::1111",
    "2a00:1450:400c:c07::1a",
    "64:ff9b::808:808",
]


@pytest.mark.parametrize("address", BLOCKED)
def test_non_global_addresses_are_refused(address: str) -> None:
    assert not is_public(address)
    assert not BLOCK_ALL.permits(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_global_addresses_are_allowed(address: str) -> None:
    assert is_public(address)
    assert BLOCK_ALL.permits(address)


BLOCKED_NETWORKS = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
]


@given(st.sampled_from(BLOCKED_NETWORKS).flatmap(lambda net: st.ip_addresses(network=net)))
def test_every_address_of_a_blocked_range_is_refused(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    assert not BLOCK_ALL.permits(str(ip))


@given(st.ip_addresses(v=4))
def test_an_ipv4_address_inside_ipv6_is_judged_as_itself(ip: ipaddress.IPv4Address) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{ip}")
    sixtofour = ipaddress.IPv6Address((0x2002 << 112) | (int(ip) << 80) | 1)
    nat64 = ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(ip))
    expected = is_public(str(ip))
    assert [is_public(str(x)) for x in (mapped, sixtofour, nat64)] == [expected] * 3


@pytest.mark.parametrize("value", ["", "false", "FALSE", " false "])
def test_private_addresses_are_blocked_by_default(value: str) -> None:
    policy = AddressPolicy.from_env({"POSTWIRE_MX_ALLOW_PRIVATE": value})
    assert policy == AddressPolicy()
    assert not any(policy.permits(a) for a in BLOCKED)


def test_true_allows_every_address_in_dev() -> None:
    policy = AddressPolicy.from_env({**DEV, "POSTWIRE_MX_ALLOW_PRIVATE": "true"})
    assert all(policy.permits(a) for a in BLOCKED + PUBLIC)


def test_a_cidr_list_allows_only_those_ranges() -> None:
    policy = AddressPolicy.from_env({**DEV, "POSTWIRE_MX_ALLOW_PRIVATE": "127.0.0.0/8, ::1/128"})
    assert policy.permits("127.0.0.2") and policy.permits("::1")
    assert not policy.permits("10.0.0.5")
    assert not policy.permits("169.254.169.254")


@pytest.mark.parametrize("value", ["true", "127.0.0.0/8"])
def test_any_allowance_outside_dev_is_refused(value: str) -> None:
    for env in ({}, {"POSTWIRE_ENV": "production"}):
        with pytest.raises(ConfigError) as caught:
            AddressPolicy.from_env({**env, "POSTWIRE_MX_ALLOW_PRIVATE": value})
        assert "POSTWIRE_MX_ALLOW_PRIVATE" in str(caught.value)
        assert "POSTWIRE_ENV=dev" in str(caught.value)


@pytest.mark.parametrize("value", ["yes", "127.0.0.0/33", "10.0.0.0/8,banana", "127.0.0.1/8x"])
def test_a_malformed_allowance_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="POSTWIRE_MX_ALLOW_PRIVATE"):
        AddressPolicy.from_env({**DEV, "POSTWIRE_MX_ALLOW_PRIVATE": value})


# -- cache lifetimes and settings ---------------------------------------------------------------


@pytest.mark.parametrize(("ttl", "kept"), [(0, 1.0), (0.2, 1.0), (300, 300.0), (86400, 3600.0)])
def test_cache_lifetimes_are_clamped_to_one_second_and_one_hour(ttl: float, kept: float) -> None:
    assert cache_ttl(ttl) == kept


def test_negative_answers_live_for_the_soa_minimum_or_sixty_seconds() -> None:
    assert negative_ttl(None) == 60.0
    assert negative_ttl((3600, 300)) == 300.0  # RFC 2308: the smaller of the SOA's TTL and minimum
    assert negative_ttl((30, 300)) == 30.0
    assert negative_ttl((0, 0)) == 1.0
    assert negative_ttl((86400, 86400)) == 3600.0


def test_mx_port() -> None:
    assert mx_port({}) == 25
    assert mx_port({"POSTWIRE_MX_PORT": "2525"}) == 2525


@pytest.mark.parametrize("value", ["0", "smtp", "65536", "-1"])
def test_a_bad_mx_port_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="POSTWIRE_MX_PORT"):
        mx_port({"POSTWIRE_MX_PORT": value})


def test_resolver_settings() -> None:
    assert dns_resolver({}) is None
    assert dns_resolver({"POSTWIRE_DNS_RESOLVER": "127.0.0.1:5353"}) == ("127.0.0.1", 5353)
    assert dns_timeout({}) == 5.0
    assert dns_timeout({"POSTWIRE_DNS_TIMEOUT_SECONDS": "0.5"}) == 0.5
    with pytest.raises(ConfigError, match="POSTWIRE_DNS_RESOLVER"):
        dns_resolver({"POSTWIRE_DNS_RESOLVER": "127.0.0.1"})

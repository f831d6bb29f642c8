"""The sealed-key reader mta_worker signs with, against real PostgreSQL: domains are created and
verified through the public DomainService, and signatures made with the keys it returns are
checked by dkimpy against the loopback DNS server that holds the records DomainService gave."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import dkim
import pytest
from dns import resolver as dns_resolver
from postwire.v1 import domain_service_pb2, domain_service_pb2_grpc

from libs.domain_keys import DomainKeyReader, KeyUnreadable, Sealer, secret_key
from libs.mail.dkim import sign
from libs.testing.dns_server import LoopbackDns
from tests.conftest import create_tenant

P = domain_service_pb2

MESSAGE = (
    b"From: Receipts <receipts@{domain}>\r\n"
    b"To: ana@example.net\r\n"
    b"Subject: Your receipt\r\n"
    b"Date: Wed, 02 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <r1@{domain}>\r\n"
    b"\r\n"
    b"Thanks.\r\n"
)


@pytest.fixture
async def pool(suite) -> AsyncIterator[asyncpg.Pool]:
    made = await asyncpg.create_pool(suite.database_url, min_size=1, max_size=2)
    assert made is not None
    yield made
    await made.close()


@pytest.fixture
def sealer(suite) -> Sealer:
    # The secret policy runs with in this suite, read the way mta_worker reads it.
    return Sealer(secret_key(suite.service_env("policy")))


async def _create(edge, tenant, *, verify: bool, dns_server: LoopbackDns) -> P.Domain:
    stub = domain_service_pb2_grpc.DomainServiceStub(edge)
    name = f"keys-{uuid.uuid4().hex[:8]}.example.org"
    created = (await stub.CreateDomain(P.CreateDomainRequest(name=name), metadata=tenant.metadata)).domain
    if verify:
        for record in created.records:
            if record.required:
                dns_server.set(record.type, record.name, record.value)
        checked = (await stub.VerifyDomain(P.VerifyDomainRequest(name=name), metadata=tenant.metadata)).domain
        assert checked.state == P.DOMAIN_STATE_VERIFIED
    return created


def _loopback_txt(dns_server: LoopbackDns) -> Callable[..., bytes | None]:
    """dkimpy's key lookup, asking the loopback server over real DNS packets."""
    resolver = dns_resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = dns_server.port

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode(), "TXT", lifetime=timeout)
        except (dns_resolver.NXDOMAIN, dns_resolver.NoAnswer):
            return None
        return b"".join(next(iter(answer)).strings)

    return dnsfunc


def _verifies(message: bytes, index: int, dnsfunc: Callable[..., bytes | None]) -> bool:
    try:
        return bool(dkim.DKIM(message).verify(idx=index, dnsfunc=dnsfunc))
    except dkim.DKIMException:
        return False


async def test_a_verified_domain_gives_keys_that_verify_against_its_published_records(
    edge, tenant, dns, pool, sealer
) -> None:
    created = await _create(edge, tenant, verify=True, dns_server=dns)
    keys = await DomainKeyReader(pool, sealer).keys_for(tenant.id, created.name)

    records = {r.purpose: r for r in created.records}
    rsa_record = records[P.DNS_RECORD_PURPOSE_DKIM_RSA]
    ed_record = records[P.DNS_RECORD_PURPOSE_DKIM_ED25519]
    assert [(k.algorithm, k.domain, f"{k.selector}._domainkey.{k.domain}") for k in keys] == [
        ("rsa-sha256", created.name, rsa_record.name),
        ("ed25519-sha256", created.name, ed_record.name),
    ]
    message = MESSAGE.replace(b"{domain}", created.name.encode())
    signed = sign(message, keys)
    lookup = _loopback_txt(dns)
    assert _verifies(signed, 0, lookup) and _verifies(signed, 1, lookup)
    # Each algorithm alone, too: a verifier that knows only one of them still passes it.
    for key in keys:
        assert dkim.verify(sign(message, [key]), dnsfunc=lookup)
    assert "PRIVATE" not in repr(keys)


async def test_an_unverified_domain_gives_no_keys(edge, tenant, dns, pool, sealer) -> None:
    created = await _create(edge, tenant, verify=False, dns_server=dns)
    assert await DomainKeyReader(pool, sealer).keys_for(tenant.id, created.name) == ()


async def test_another_tenants_verified_domain_gives_no_keys(suite, edge, tenant, dns, pool, sealer) -> None:
    created = await _create(edge, tenant, verify=True, dns_server=dns)
    other = await create_tenant(suite)
    reader = DomainKeyReader(pool, sealer)
    assert await reader.keys_for(other.id, created.name) == ()
    assert len(await reader.keys_for(tenant.id, created.name)) == 2
    assert await reader.keys_for(tenant.id, "never-registered.example.org") == ()


async def test_answers_are_cached_for_the_ttl_and_opened_keys_for_good(
    edge, tenant, dns, pool, sealer
) -> None:
    created = await _create(edge, tenant, verify=True, dns_server=dns)
    now = [1000.0]
    reader = DomainKeyReader(pool, sealer, ttl=60.0, clock=lambda: now[0])
    first = await reader.keys_for(tenant.id, created.name)
    assert len(first) == 2

    # Unverified behind the reader's back: within the ttl the cached answer stands.
    await pool.execute("UPDATE domains SET verified = false WHERE name = $1", created.name)
    now[0] += 59
    assert await reader.keys_for(tenant.id, created.name) == first
    now[0] += 2
    assert await reader.keys_for(tenant.id, created.name) == ()

    # Verified again: the answer is read anew, but the keys are not unsealed and parsed again.
    await pool.execute("UPDATE domains SET verified = true WHERE name = $1", created.name)
    now[0] += 61
    again = await reader.keys_for(tenant.id, created.name)
    assert [id(k) for k in again] == [id(k) for k in first]

    # Deleted through the API: gone once the ttl has passed.
    stub = domain_service_pb2_grpc.DomainServiceStub(edge)
    await stub.DeleteDomain(P.DeleteDomainRequest(name=created.name), metadata=tenant.metadata)
    now[0] += 61
    assert await reader.keys_for(tenant.id, created.name) == ()


async def test_a_different_secret_key_fails_loudly_without_showing_a_key(edge, tenant, dns, pool) -> None:
    created = await _create(edge, tenant, verify=True, dns_server=dns)
    reader = DomainKeyReader(pool, Sealer("not the deployment's secret"))
    with pytest.raises(KeyUnreadable) as caught:
        await reader.keys_for(tenant.id, created.name)
    assert created.name in str(caught.value) and "PRIVATE" not in str(caught.value)


async def test_a_database_failure_propagates(suite, edge, tenant, dns, sealer) -> None:
    created = await _create(edge, tenant, verify=True, dns_server=dns)
    closed = await asyncpg.create_pool(suite.database_url, min_size=1, max_size=1)
    assert closed is not None
    await closed.close()
    # The caller defers the message rather than sending it unsigned.
    with pytest.raises(asyncpg.InterfaceError):
        await DomainKeyReader(closed, sealer).keys_for(tenant.id, created.name)

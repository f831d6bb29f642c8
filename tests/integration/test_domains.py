"""Sending domains through the public address: DKIM keys made and sealed, records to publish,
verification against a DNS server on loopback, and From addresses held to verified domains."""

from __future__ import annotations

import base64
import uuid

import asyncpg
import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from postwire.v1 import domain_service_pb2, domain_service_pb2_grpc, mail_service_pb2_grpc

from libs.domain_keys import Sealer
from services.policy.config import DEV_SECRET_KEY
from tests.conftest import create_tenant
from tests.integration.helpers import bad_request_fields, mail, unique, wait_for_mail

P = domain_service_pb2
FOUND, MISSING, MISMATCH, FAILED = (
    P.DNS_RECORD_STATUS_FOUND,
    P.DNS_RECORD_STATUS_MISSING,
    P.DNS_RECORD_STATUS_MISMATCH,
    P.DNS_RECORD_STATUS_LOOKUP_FAILED,
)


def _stub(edge: grpc.aio.Channel) -> domain_service_pb2_grpc.DomainServiceStub:
    return domain_service_pb2_grpc.DomainServiceStub(edge)


def _by_purpose(domain: P.Domain) -> dict[int, P.DnsRecord]:
    return {r.purpose: r for r in domain.records}


def _publish(dns, domain: P.Domain, *, skip: tuple[int, ...] = ()) -> None:
    for record in domain.records:
        if record.purpose in skip or not record.required:
            continue
        value = record.value
        if record.purpose == P.DNS_RECORD_PURPOSE_SPF:
            # An existing SPF record gains our include, as a domain already sending elsewhere would.
            value = value.replace("v=spf1 ", "v=spf1 include:_spf.other-provider.example ")
        dns.set(record.type, record.name, value)


def _precondition(exc: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None
    found = []
    for detail in status.details:
        if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            found += [(v.type, v.subject) for v in failure.violations]
    return found


async def test_register_publish_verify_then_send_from_the_domain(suite, edge, tenant, dns, smtp_sink) -> None:
    name = f"mail-{uuid.uuid4().hex[:8]}.example.org"
    created = (
        await _stub(edge).CreateDomain(P.CreateDomainRequest(name=name.upper()), metadata=tenant.metadata)
    ).domain
    assert created.name == name and created.state == P.DOMAIN_STATE_PENDING
    records = _by_purpose(created)
    rsa_record, ed_record = records[P.DNS_RECORD_PURPOSE_DKIM_RSA], records[P.DNS_RECORD_PURPOSE_DKIM_ED25519]
    assert rsa_record.type == "TXT" and rsa_record.name.endswith(f"._domainkey.{name}")
    rsa_public = serialization.load_der_public_key(base64.b64decode(rsa_record.value.split("p=")[1]))
    assert isinstance(rsa_public, rsa.RSAPublicKey) and rsa_public.key_size == 2048
    assert ed_record.value.startswith("v=DKIM1; k=ed25519; p=")
    ed_public = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(ed_record.value.split("p=")[1]))
    assert records[P.DNS_RECORD_PURPOSE_SPF].value == "v=spf1 include:_spf.postwire.localhost ~all"
    assert records[P.DNS_RECORD_PURPOSE_RETURN_PATH].type == "CNAME"
    assert records[P.DNS_RECORD_PURPOSE_RETURN_PATH].value == "bounces.postwire.localhost"
    assert (
        records[P.DNS_RECORD_PURPOSE_DMARC].name == f"_dmarc.{name}"
        and not records[P.DNS_RECORD_PURPOSE_DMARC].required
    )

    sender = f"receipts@{name}"
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendEmail(mail(from_={"address": sender}), metadata=tenant.metadata)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _precondition(caught.value) == [("DOMAIN_NOT_VERIFIED", "from.address")]
    refused_text = caught.value.details()

    # Nothing published yet: every record is missing.
    checked = (
        await _stub(edge).VerifyDomain(P.VerifyDomainRequest(name=name), metadata=tenant.metadata)
    ).domain
    assert checked.state == P.DOMAIN_STATE_PENDING and checked.HasField("check_time")
    assert {r.status for r in checked.records} == {MISSING}

    _publish(dns, created)
    verified = (
        await _stub(edge).VerifyDomain(P.VerifyDomainRequest(name=name), metadata=tenant.metadata)
    ).domain
    assert verified.state == P.DOMAIN_STATE_VERIFIED and verified.HasField("verify_time")
    statuses = {r.purpose: r.status for r in verified.records}
    assert statuses == {
        P.DNS_RECORD_PURPOSE_DKIM_RSA: FOUND,
        P.DNS_RECORD_PURPOSE_DKIM_ED25519: FOUND,
        P.DNS_RECORD_PURPOSE_SPF: FOUND,
        P.DNS_RECORD_PURPOSE_RETURN_PATH: FOUND,
        P.DNS_RECORD_PURPOSE_DMARC: MISSING,  # suggested, not required
    }

    rcpt = unique()
    await stub.SendEmail(mail(from_={"address": sender}, to=[{"address": rcpt}]), metadata=tenant.metadata)
    await wait_for_mail(smtp_sink, rcpt)

    # Another tenant cannot send from it, and is told exactly what an unregistered domain gets.
    other = await create_tenant(suite)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendEmail(mail(from_={"address": sender}), metadata=other.metadata)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == refused_text
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _stub(edge).GetDomain(P.GetDomainRequest(name=name), metadata=other.metadata)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    # The private keys are stored sealed: no PEM in the row, and opening it gives the published key.
    conn = await asyncpg.connect(suite.database_url)
    try:
        row = await conn.fetchrow(
            "SELECT id, rsa_private, ed25519_private FROM domains WHERE name = $1", name
        )
    finally:
        await conn.close()
    assert b"PRIVATE KEY" not in row["rsa_private"] and b"PRIVATE KEY" not in row["ed25519_private"]
    opened = Sealer(DEV_SECRET_KEY).open(row["ed25519_private"], str(row["id"]))
    private = serialization.load_pem_private_key(opened, password=None)
    assert private.public_key().public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    ) == ed_public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    with pytest.raises(Exception):  # noqa: B017 - any failure: the wrong key must not open it
        Sealer("another deployment").open(row["ed25519_private"], str(row["id"]))
    assert "PRIVATE KEY" not in (suite.data_dir / "logs" / "policy.log").read_text()

    # Deleted: sends from it are refused again.
    await _stub(edge).DeleteDomain(P.DeleteDomainRequest(name=name), metadata=tenant.metadata)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendEmail(mail(from_={"address": sender}), metadata=tenant.metadata)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_wrong_records_and_failing_lookups_are_told_apart(edge, tenant, dns) -> None:
    name = f"mx-{uuid.uuid4().hex[:8]}.example.org"
    created = (
        await _stub(edge).CreateDomain(P.CreateDomainRequest(name=name), metadata=tenant.metadata)
    ).domain
    records = _by_purpose(created)
    _publish(dns, created, skip=(P.DNS_RECORD_PURPOSE_DKIM_RSA, P.DNS_RECORD_PURPOSE_RETURN_PATH))
    # A stale key from another provider at our selector, and the return path pointing elsewhere.
    dns.set("TXT", records[P.DNS_RECORD_PURPOSE_DKIM_RSA].name, "v=DKIM1; k=rsa; p=MIIBIjANBgkqh")
    dns.set("CNAME", records[P.DNS_RECORD_PURPOSE_RETURN_PATH].name, "bounces.elsewhere.example")
    dns.fail(f"_dmarc.{name}")
    checked = (
        await _stub(edge).VerifyDomain(P.VerifyDomainRequest(name=name), metadata=tenant.metadata)
    ).domain
    statuses = {r.purpose: r.status for r in checked.records}
    assert statuses[P.DNS_RECORD_PURPOSE_DKIM_RSA] == MISMATCH
    assert statuses[P.DNS_RECORD_PURPOSE_RETURN_PATH] == MISMATCH
    assert statuses[P.DNS_RECORD_PURPOSE_DKIM_ED25519] == FOUND
    assert statuses[P.DNS_RECORD_PURPOSE_DMARC] == FAILED
    assert checked.state == P.DOMAIN_STATE_PENDING

    # An SPF record without our include does not count.
    dns.set("TXT", name, "v=spf1 include:_spf.other-provider.example ~all")
    checked = (
        await _stub(edge).VerifyDomain(P.VerifyDomainRequest(name=name), metadata=tenant.metadata)
    ).domain
    assert {r.purpose: r.status for r in checked.records}[P.DNS_RECORD_PURPOSE_SPF] == MISMATCH


async def test_names_duplicates_and_listing(edge, tenant) -> None:
    stub = _stub(edge)
    for bad in ("", "localhost", "exa mple.org", "-bad.example.org", "1.2.3.4", "a" * 64 + ".example.org"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateDomain(P.CreateDomainRequest(name=bad), metadata=tenant.metadata)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert bad_request_fields(caught.value) == ["name"]
    idn = (
        await stub.CreateDomain(
            P.CreateDomainRequest(name=f"bücher-{uuid.uuid4().hex[:6]}.example"), metadata=tenant.metadata
        )
    ).domain
    assert idn.name.startswith("xn--")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateDomain(P.CreateDomainRequest(name=idn.name), metadata=tenant.metadata)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    listed = await stub.ListDomains(P.ListDomainsRequest(), metadata=tenant.metadata)
    assert idn.name in [d.name for d in listed.domains]
    # Responses never carry private key material.
    assert b"PRIVATE" not in listed.SerializeToString()

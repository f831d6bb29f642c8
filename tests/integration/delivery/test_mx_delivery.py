"""MX delivery end to end (issue 10): a loopback DNS server publishes MX, null MX and DKIM records,
scripted SMTP servers on 127.0.0.x play the MX hosts, and what arrives is checked on the wire —
signatures by an independent verifier (dkimpy) against that DNS, return paths by opening their
token, one transaction per recipient, and every failure's event with its reason and category."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import dkim
import dns.message
import dns.query
import dns.rdatatype
import grpc
from postwire.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    domain_service_pb2,
    domain_service_pb2_grpc,
    event_pb2,
    mail_service_pb2_grpc,
    message_pb2,
)

from libs.return_path import ReturnPathTokens
from libs.testing.dns_server import LoopbackDns
from libs.testing.smtp_servers import ScriptedSmtpServer, Transaction
from libs.testing.test_ca import TestCa
from libs.token_keys import KeyRing
from tests.conftest import ADMIN_TOKEN, TOKEN_KEYS, Tenant
from tests.integration.delivery.conftest import RETURN_PATH_HOST, TLS_REQUIRED_DOMAIN
from tests.integration.helpers import mail, wait_for_events

E = event_pb2
HARD, CONFIG = message_pb2.BOUNCE_CATEGORY_HARD, message_pb2.BOUNCE_CATEGORY_CONFIG
Servers = Callable[..., ScriptedSmtpServer]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}.test.example"


async def _verified_domain(edge: grpc.aio.Channel, tenant: Tenant, loopback: LoopbackDns, name: str) -> None:
    stub = domain_service_pb2_grpc.DomainServiceStub(edge)
    created = (
        await stub.CreateDomain(domain_service_pb2.CreateDomainRequest(name=name), metadata=tenant.metadata)
    ).domain
    for record in created.records:
        if record.required:
            loopback.set(record.type, record.name, record.value)
    verified = (
        await stub.VerifyDomain(domain_service_pb2.VerifyDomainRequest(name=name), metadata=tenant.metadata)
    ).domain
    assert verified.state == domain_service_pb2.DOMAIN_STATE_VERIFIED


def _mx(loopback: LoopbackDns, domain: str, *hosts: tuple[int, str, str]) -> None:
    """Publish MX records for `domain`: (preference, host label, address) each."""
    loopback.set("MX", domain, *(f"{pref} {label}.{domain}" for pref, label, _ in hosts))
    for _, label, address in hosts:
        loopback.set("A", f"{label}.{domain}", address)


def _dnsfunc(loopback: LoopbackDns) -> Callable[..., bytes]:
    """dkimpy's key lookup, asking the loopback DNS server over the wire."""

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        query = dns.message.make_query(name.decode().rstrip("."), dns.rdatatype.TXT)
        answer = dns.query.udp(query, "127.0.0.1", port=loopback.port, timeout=timeout)
        for rrset in answer.answer:
            for rdata in rrset:
                return b"".join(rdata.strings)
        return b""

    return lookup


async def _send(edge: grpc.aio.Channel, tenant: Tenant, **fields: Any) -> str:
    answer = await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
        mail(**fields), metadata=tenant.metadata
    )
    return str(answer.message_id)


def _by_recipient(events: list[E.Event], event_type: int) -> dict[str, E.Event]:
    return {e.recipient: e for e in events if e.type == event_type}


async def test_a_verified_domain_arrives_signed_rsa_and_ed25519_with_per_recipient_return_paths(
    mx_suite, mx_edge, mx_tenant, dns, mx_servers: Servers, trusted_ca: TestCa
) -> None:
    sender_domain, inbox = _name("signed"), _name("inbox")
    await _verified_domain(mx_edge, mx_tenant, dns, sender_domain)
    _mx(dns, inbox, (10, "mx1", "127.0.0.2"))
    server = mx_servers("127.0.0.2", starttls=trusted_ca.server_context(f"mx1.{inbox}"))
    alice, bob = f"alice@{inbox}", f"bob@{inbox}"

    message_id = await _send(
        mx_edge,
        mx_tenant,
        from_={"address": f"hello@{sender_domain}", "name": "Hello"},
        to=[{"address": alice}, {"address": bob}],
        subject="Signed twice",
    )
    transactions = await server.wait_for(2)

    # Two recipients at one domain: two transactions, back to back on one connection.
    assert sorted(t.rcpt_tos for t in transactions) == [(alice,), (bob,)]
    assert len(server.connections()) == 1
    tokens = ReturnPathTokens(KeyRing.parse(TOKEN_KEYS))
    for transaction in transactions:
        local, _, host = transaction.mail_from.partition("@")
        assert host == f"pw-bounces.{sender_domain}" and local.startswith("bounces+") and len(local) <= 64
        assert tokens.open(local.removeprefix("bounces+")) == (
            message_id,
            [alice, bob].index(transaction.rcpt_tos[0]),
        )
        # The complaint token travels in a signed header too: ARF reports often keep only headers.
        headers = transaction.parsed()
        assert tokens.open(headers["X-Postwire-Feedback-Id"]) == tokens.open(local.removeprefix("bounces+"))
        assert headers["Feedback-ID"] == f"transactional:{mx_tenant.id}:postwire"
        _assert_signed_by_both(transaction, dns, sender_domain)
        assert transaction.tls is not None  # opportunistic STARTTLS was taken

    delivered = _by_recipient(
        await wait_for_events(mx_edge, mx_tenant.metadata, message_id, [E.EVENT_TYPE_DELIVERED] * 2),
        E.EVENT_TYPE_DELIVERED,
    )
    for event in delivered.values():
        assert event.remote.host == f"mx1.{inbox}" and event.remote.address == "127.0.0.2"
        assert event.remote.tls_version.startswith("TLSv1") and event.remote.tls_cipher
        assert not event.remote.tls_verified  # opportunistic: the certificate is not checked


def _assert_signed_by_both(transaction: Transaction, loopback: LoopbackDns, domain: str) -> None:
    message = transaction.data
    signatures = [v for k, v in transaction.parsed().items() if k.lower() == "dkim-signature"]
    algorithms = sorted(
        dict(t.strip().split("=", 1) for t in s.split(";") if "=" in t)["a"] for s in signatures
    )
    assert algorithms == ["ed25519-sha256", "rsa-sha256"]
    verifier = dkim.DKIM(message)
    for index in range(2):
        assert verifier.verify(idx=index, dnsfunc=_dnsfunc(loopback)), f"signature {index} does not verify"
        assert verifier.domain == domain.encode()
    # A copy changed after signing fails: the verifier is really checking.
    tampered = message.replace(b"Signed twice", b"Signed thrice")
    assert not dkim.DKIM(tampered).verify(idx=0, dnsfunc=_dnsfunc(loopback))


async def test_an_unverified_from_domain_goes_out_unsigned_with_the_shared_return_path_to_an_implicit_mx(
    mx_suite, mx_edge, mx_tenant, dns, mx_servers: Servers
) -> None:
    inbox = _name("plain")
    dns.set("A", inbox, "127.0.0.3")  # no MX: the domain's own address is its implicit MX
    server = mx_servers("127.0.0.3")
    message_id = await _send(mx_edge, mx_tenant, to=[{"address": f"carol@{inbox}"}])
    (transaction,) = await server.wait_for(1)
    local, _, host = transaction.mail_from.partition("@")
    assert host == RETURN_PATH_HOST
    assert ReturnPathTokens(KeyRing.parse(TOKEN_KEYS)).open(local.removeprefix("bounces+")) == (message_id, 0)
    assert transaction.parsed()["DKIM-Signature"] is None
    assert transaction.tls is None  # the server offers no STARTTLS: plain text is fine here


async def test_null_mx_nxdomain_and_a_private_mx_bounce_with_reasons_and_categories(
    mx_suite, mx_edge, mx_tenant, dns
) -> None:
    null_mx, missing, private = _name("nullmx"), _name("nxdomain"), _name("private")
    dns.set("MX", null_mx, "0 .")
    _mx(dns, private, (10, "mx", "10.0.0.5"))
    recipients = [f"a@{null_mx}", f"b@{missing}", f"c@{private}"]
    message_id = await _send(mx_edge, mx_tenant, to=[{"address": r} for r in recipients])
    bounced = _by_recipient(
        await wait_for_events(mx_edge, mx_tenant.metadata, message_id, [E.EVENT_TYPE_BOUNCED] * 3),
        E.EVENT_TYPE_BOUNCED,
    )
    a, b, c = (bounced[r] for r in recipients)
    assert (a.smtp_reply.code, a.smtp_reply.enhanced_code, a.bounce_category) == (556, "5.1.10", HARD)
    assert "null MX" in a.reason
    assert (b.smtp_reply.enhanced_code, b.bounce_category) == ("5.1.2", HARD) and missing in b.reason
    assert (c.smtp_reply.enhanced_code, c.bounce_category) == ("5.4.4", CONFIG)
    assert "blocked destination" in c.reason and "10.0.0.5" in c.reason
    assert not any(e.HasField("remote") for e in bounced.values())  # nothing was connected to


async def test_a_dead_first_mx_falls_over_to_the_next_preference(
    mx_suite, mx_edge, mx_tenant, dns, mx_servers: Servers
) -> None:
    inbox = _name("fallover")
    # 127.0.0.4 answers 421 at the greeting; 127.0.0.5 has nothing listening; 127.0.0.6 works.
    _mx(dns, inbox, (5, "busy", "127.0.0.4"), (10, "dead", "127.0.0.5"), (20, "good", "127.0.0.6"))
    busy = mx_servers("127.0.0.4", greeting="421 4.3.2 Service not available")
    good = mx_servers("127.0.0.6")
    message_id = await _send(mx_edge, mx_tenant, to=[{"address": f"dave@{inbox}"}])
    (transaction,) = await good.wait_for(1)
    assert transaction.rcpt_tos == (f"dave@{inbox}",)
    assert busy.transactions() == [] and len(busy.connections()) >= 1
    (event,) = (await wait_for_events(mx_edge, mx_tenant.metadata, message_id, [E.EVENT_TYPE_DELIVERED]))[-1:]
    assert event.remote.host == f"good.{inbox}"


async def test_a_per_recipient_refusal_bounces_that_recipient_only(
    mx_suite, mx_edge, mx_tenant, dns, mx_servers: Servers
) -> None:
    inbox = _name("refuse")
    _mx(dns, inbox, (10, "mx", "127.0.0.7"))
    gone, here = f"gone@{inbox}", f"here@{inbox}"
    server = mx_servers(
        "127.0.0.7", rcpt_replies={gone: "550 5.1.1 The email account that you tried to reach does not exist"}
    )
    message_id = await _send(mx_edge, mx_tenant, to=[{"address": gone}, {"address": here}])
    events = await wait_for_events(
        mx_edge, mx_tenant.metadata, message_id, [E.EVENT_TYPE_BOUNCED, E.EVENT_TYPE_DELIVERED]
    )
    bounced = _by_recipient(events, E.EVENT_TYPE_BOUNCED)[gone]
    assert (bounced.smtp_reply.code, bounced.smtp_reply.enhanced_code, bounced.bounce_category) == (
        550,
        "5.1.1",
        HARD,
    )
    assert bounced.remote.address == "127.0.0.7"
    assert [t.rcpt_tos for t in server.transactions()] == [(here,)]


async def test_a_tls_required_domain_whose_mx_offers_no_starttls_defers_and_sends_nothing(
    mx_suite, mx_edge, mx_tenant, dns, mx_servers: Servers
) -> None:
    _mx(dns, TLS_REQUIRED_DOMAIN, (10, "mx", "127.0.0.8"))
    server = mx_servers("127.0.0.8")  # no STARTTLS
    message_id = await _send(mx_edge, mx_tenant, to=[{"address": f"erin@{TLS_REQUIRED_DOMAIN}"}])
    (deferred,) = (await wait_for_events(mx_edge, mx_tenant.metadata, message_id, [E.EVENT_TYPE_DEFERRED]))[
        -1:
    ]
    assert deferred.bounce_category == CONFIG
    assert "STARTTLS" in deferred.reason and "required" in deferred.reason
    assert server.transactions() == []
    assert len(server.connections()) >= 1  # it was asked, and refused for want of TLS


async def test_a_tenant_requiring_tls_gets_a_verified_certificate_or_nothing(
    mx_suite, mx_edge, mx_tenant: Tenant, dns, mx_servers: Servers, trusted_ca: TestCa, untrusted_ca: TestCa
) -> None:
    admin = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    await admin_service_pb2_grpc.AdminServiceStub(mx_edge).UpdateTenant(
        admin_service_pb2.UpdateTenantRequest(
            tenant=admin_service_pb2.Tenant(id=mx_tenant.id, require_tls=True),
            update_mask={"paths": ["require_tls"]},
        ),
        metadata=admin,
    )
    good_domain, bad_domain = _name("verified"), _name("selfsigned")
    _mx(dns, good_domain, (10, "mx", "127.0.0.9"))
    _mx(dns, bad_domain, (10, "mx", "127.0.0.2"))
    good = mx_servers("127.0.0.9", starttls=trusted_ca.server_context(f"mx.{good_domain}"))
    bad = mx_servers("127.0.0.2", starttls=untrusted_ca.server_context(f"mx.{bad_domain}"))

    ok_id = await _send(mx_edge, mx_tenant, to=[{"address": f"frank@{good_domain}"}])
    (transaction,) = await good.wait_for(1)
    assert transaction.tls is not None
    (delivered,) = (await wait_for_events(mx_edge, mx_tenant.metadata, ok_id, [E.EVENT_TYPE_DELIVERED]))[-1:]
    assert delivered.remote.tls_verified

    refused_id = await _send(mx_edge, mx_tenant, to=[{"address": f"grace@{bad_domain}"}])
    (deferred,) = (await wait_for_events(mx_edge, mx_tenant.metadata, refused_id, [E.EVENT_TYPE_DEFERRED]))[
        -1:
    ]
    assert deferred.bounce_category == CONFIG and "certificate" in deferred.reason
    assert bad.transactions() == []

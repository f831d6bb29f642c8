"""Relay (smarthost) delivery with TLS and AUTH (issue 10): the MX suite's mta_worker is restarted
in smarthost mode against scripted relays, the way SES, SendGrid, Postmark or Mailgun are used:
STARTTLS with a verified certificate, then AUTH, never AUTH before TLS."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from postwire.v1 import event_pb2, mail_service_pb2_grpc, message_pb2

from libs.embedded.suite import Suite
from libs.testing.smtp_servers import ScriptedSmtpServer
from libs.testing.test_ca import TestCa
from tests.conftest import Tenant
from tests.integration.helpers import mail, wait_for_events

E = event_pb2
USER, PASSWORD = "apikey", "relay-secret-" + uuid.uuid4().hex
Configure = Callable[..., None]


@pytest.fixture
def relay_worker(mx_suite: Suite) -> Iterator[Configure]:
    """Restart the MX suite's mta_worker with relay settings; put it back afterwards."""
    original = dict(mx_suite.extra_env)

    def restart(env: dict[str, str]) -> None:
        mx_suite.processes["mta_worker"].stop(timeout=30)
        mx_suite.extra_env = env
        mx_suite.start_service("mta_worker")

    def configure(**settings: str) -> None:
        restart({**original, "POSTWIRE_DELIVERY_MODE": "smarthost", **settings})

    yield configure
    restart(original)


@pytest.fixture
def relay(data_dir: Path) -> Iterator[Callable[..., ScriptedSmtpServer]]:
    started: list[ScriptedSmtpServer] = []

    def start(**options: object) -> ScriptedSmtpServer:
        server = ScriptedSmtpServer(host="127.0.0.1", port=0, auth={USER: PASSWORD}, **options).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


async def _send(mx_edge, tenant: Tenant, recipient: str) -> str:
    answer = await mail_service_pb2_grpc.MailServiceStub(mx_edge).SendEmail(
        mail(to=[{"address": recipient}]), metadata=tenant.metadata
    )
    return str(answer.message_id)


async def test_a_relay_whose_certificate_does_not_verify_gets_neither_auth_nor_the_message(
    mx_edge,
    mx_tenant,
    relay_worker: Configure,
    relay,
    untrusted_ca: TestCa,
    trusted_ca: TestCa,
    data_dir: Path,
) -> None:
    server = relay(starttls=untrusted_ca.server_context("localhost"))
    relay_worker(
        POSTWIRE_SMARTHOST=f"localhost:{server.port}",
        POSTWIRE_SMARTHOST_TLS="starttls",
        POSTWIRE_SMARTHOST_CA_FILE=str(trusted_ca.ca_file(data_dir / "relay-ca")),
        POSTWIRE_SMARTHOST_USERNAME=USER,
        POSTWIRE_SMARTHOST_PASSWORD=PASSWORD,
    )
    message_id = await _send(mx_edge, mx_tenant, f"henry-{uuid.uuid4().hex[:6]}@customer.example")
    (deferred,) = (await wait_for_events(mx_edge, mx_tenant.metadata, message_id, [E.EVENT_TYPE_DEFERRED]))[
        -1:
    ]
    assert deferred.bounce_category == message_pb2.BOUNCE_CATEGORY_CONFIG
    assert "certificate" in deferred.reason and "localhost" in deferred.reason
    assert PASSWORD not in deferred.reason
    assert server.auth_attempts() == [] and server.transactions() == []
    assert len(server.connections()) >= 1  # it was reached, and left before AUTH


async def test_a_trusted_starttls_relay_with_auth_receives_the_message(
    mx_edge, mx_tenant, relay_worker: Configure, relay, trusted_ca: TestCa, data_dir: Path
) -> None:
    server = relay(starttls=trusted_ca.server_context("localhost"))
    relay_worker(
        POSTWIRE_SMARTHOST=f"localhost:{server.port}",
        POSTWIRE_SMARTHOST_TLS="starttls",
        POSTWIRE_SMARTHOST_CA_FILE=str(trusted_ca.ca_file(data_dir / "relay-ca")),
        POSTWIRE_SMARTHOST_USERNAME=USER,
        POSTWIRE_SMARTHOST_PASSWORD=PASSWORD,
    )
    recipient = f"irene-{uuid.uuid4().hex[:6]}@customer.example"
    message_id = await _send(mx_edge, mx_tenant, recipient)
    # Earlier tests' deferred mail may reach this relay too: look for this recipient's copy.
    (delivered,) = (await wait_for_events(mx_edge, mx_tenant.metadata, message_id, [E.EVENT_TYPE_DELIVERED]))[
        -1:
    ]
    (transaction,) = [t for t in server.transactions() if t.rcpt_tos == (recipient,)]
    assert transaction.tls is not None
    attempts = server.auth_attempts()
    assert attempts and all(a.tls and a.username == USER and a.success for a in attempts)
    (delivered,) = (await wait_for_events(mx_edge, mx_tenant.metadata, message_id, [E.EVENT_TYPE_DELIVERED]))[
        -1:
    ]
    assert delivered.remote.host == "localhost" and delivered.remote.tls_verified
    assert delivered.remote.tls_version.startswith("TLSv1")


async def test_implicit_tls_relay_receives_the_message(
    mx_edge, mx_tenant, relay_worker: Configure, relay, trusted_ca: TestCa, data_dir: Path
) -> None:
    server = relay(implicit_tls=trusted_ca.server_context("localhost"))
    relay_worker(
        POSTWIRE_SMARTHOST=f"localhost:{server.port}",
        POSTWIRE_SMARTHOST_TLS="implicit",
        POSTWIRE_SMARTHOST_CA_FILE=str(trusted_ca.ca_file(data_dir / "relay-ca")),
        POSTWIRE_SMARTHOST_USERNAME=USER,
        POSTWIRE_SMARTHOST_PASSWORD=PASSWORD,
    )
    recipient = f"judy-{uuid.uuid4().hex[:6]}@customer.example"
    message_id = await _send(mx_edge, mx_tenant, recipient)
    await wait_for_events(mx_edge, mx_tenant.metadata, message_id, [E.EVENT_TYPE_DELIVERED])
    assert [t.rcpt_tos for t in server.transactions() if t.rcpt_tos == (recipient,)] == [(recipient,)]
    assert all(a.tls for a in server.auth_attempts())

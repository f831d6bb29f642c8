"""The scripted SMTP servers the delivery tests stand on, driven by a real client (aiosmtplib):
if a server misreports TLS, AUTH or what arrived, every delivery test above it would lie."""

from __future__ import annotations

import base64
import ssl
import time
from collections.abc import Iterator

import aiosmtplib
import pytest

from libs.embedded.ports import free_port_on
from libs.testing.smtp_servers import ScriptedSmtpServer
from libs.testing.test_ca import TestCa

MX_NAME = "mx.test.example"
MESSAGE = b"From: a@sender.test.example\r\nTo: b@rcpt.test.example\r\nSubject: hi\r\n\r\nHello.\r\n"


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa()


@pytest.fixture(scope="module")
def rogue_ca() -> TestCa:
    return TestCa("Untrusted test CA")


@pytest.fixture
def plain() -> Iterator[ScriptedSmtpServer]:
    with ScriptedSmtpServer(host="127.0.0.1") as server:
        yield server


async def _starttls_client(server: ScriptedSmtpServer, trust: ssl.SSLContext) -> aiosmtplib.SMTP:
    """Connect by IP (as MX delivery does) and verify the certificate against the MX name."""
    client = aiosmtplib.SMTP(hostname=server.host, port=server.port, start_tls=False, timeout=5)
    await client.connect()
    await client.ehlo()
    await client.starttls(server_hostname=MX_NAME, tls_context=trust)
    return client


async def test_starttls_with_a_trusted_ca_verifies_and_is_recorded(ca: TestCa) -> None:
    with ScriptedSmtpServer(host="127.0.0.2", starttls=ca.server_context(MX_NAME)) as server:
        client = await _starttls_client(server, ca.client_context())
        await client.sendmail("a@sender.test.example", ["b@rcpt.test.example"], MESSAGE)
        await client.quit()

        [arrived] = await server.wait_for(1, timeout=5)
        [connection] = server.connections()
    assert connection.tls is not None and connection.tls.version.startswith("TLSv1.")
    assert connection.tls.cipher
    assert arrived.tls == connection.tls
    assert arrived.data == MESSAGE
    assert connection.local == ("127.0.0.2", server.port)


async def test_starttls_with_an_untrusted_ca_fails_verification_and_nothing_is_sent(
    ca: TestCa, rogue_ca: TestCa
) -> None:
    with ScriptedSmtpServer(
        host="127.0.0.2", starttls=rogue_ca.server_context(MX_NAME), auth={"relay-user": "s3cret"}
    ) as server:
        client = aiosmtplib.SMTP(hostname=server.host, port=server.port, start_tls=False, timeout=5)
        await client.connect()
        await client.ehlo()
        with pytest.raises(ssl.SSLCertVerificationError):
            await client.starttls(server_hostname=MX_NAME, tls_context=ca.client_context())
        client.close()

        [connection] = server.connections()
    assert connection.tls is None
    assert connection.auth_attempts == ()
    assert connection.transactions == ()


async def test_a_certificate_for_another_name_fails_verification(ca: TestCa) -> None:
    with ScriptedSmtpServer(host="127.0.0.2", starttls=ca.server_context("other.test.example")) as server:
        client = aiosmtplib.SMTP(hostname=server.host, port=server.port, start_tls=False, timeout=5)
        await client.connect()
        await client.ehlo()
        with pytest.raises(ssl.SSLCertVerificationError):
            await client.starttls(server_hostname=MX_NAME, tls_context=ca.client_context())
        client.close()


async def test_auth_is_required_before_mail_and_every_attempt_is_recorded(ca: TestCa) -> None:
    with ScriptedSmtpServer(
        host="127.0.0.2", starttls=ca.server_context(MX_NAME), auth={"relay-user": "s3cret"}
    ) as server:
        client = aiosmtplib.SMTP(hostname=server.host, port=server.port, start_tls=False, timeout=5)
        await client.connect()
        await client.ehlo()
        # AUTH is not offered in plain text; a client that sends it anyway is refused and recorded.
        assert not client.supports_extension("auth")
        initial = base64.b64encode(b"\x00relay-user\x00s3cret")
        refused = await client.execute_command(b"AUTH", b"PLAIN", initial)
        assert refused.code == 538

        await client.starttls(server_hostname=MX_NAME, tls_context=ca.client_context())
        await client.ehlo()
        assert client.supports_extension("auth")
        assert {"plain", "login"} <= set(client.server_auth_methods)
        with pytest.raises(aiosmtplib.SMTPResponseException) as unauthenticated:
            await client.mail("a@sender.test.example")
        assert unauthenticated.value.code == 530
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await client.login("relay-user", "wrong")
        await client.login("relay-user", "s3cret")
        await client.sendmail("a@sender.test.example", ["b@rcpt.test.example"], MESSAGE)
        await client.quit()

        await server.wait_for(1, timeout=5)
        [connection] = server.connections()
    assert connection.auth_user == "relay-user"
    attempts = [(a.tls, a.username, a.success) for a in connection.auth_attempts]
    # aiosmtplib tries each offered mechanism before it gives up on a wrong password.
    assert attempts[0] == (False, "relay-user", False)
    assert set(attempts[1:-1]) == {(True, "relay-user", False)}
    assert attempts[-1] == (True, "relay-user", True)
    assert len(connection.transactions) == 1


async def test_a_plaintext_relay_takes_auth_without_tls_and_records_it() -> None:
    with ScriptedSmtpServer(host="127.0.0.2", auth={"u": "p"}, auth_require_tls=False) as server:
        async with aiosmtplib.SMTP(
            hostname=server.host, port=server.port, start_tls=False, timeout=5
        ) as client:
            await client.ehlo()
            assert client.supports_extension("auth")
            await client.login("u", "p")
        [attempt] = server.auth_attempts()
    assert (attempt.tls, attempt.username, attempt.success) == (False, "u", True)


async def test_implicit_tls_from_the_first_byte(ca: TestCa) -> None:
    with ScriptedSmtpServer(host="127.0.0.2", implicit_tls=ca.server_context(MX_NAME)) as server:
        client = aiosmtplib.SMTP(
            hostname=server.host, port=server.port, use_tls=True, tls_context=ca.client_context(), timeout=5
        )
        # aiosmtplib verifies against the hostname it connects to; connect by IP, check the name.
        client.tls_context.check_hostname = False  # type: ignore[union-attr]
        await client.connect()
        await client.sendmail("a@sender.test.example", ["b@rcpt.test.example"], MESSAGE)
        await client.quit()
        [arrived] = await server.wait_for(1, timeout=5)
    assert arrived.tls is not None


async def test_a_421_greeting_is_answered_and_the_connection_closed() -> None:
    with ScriptedSmtpServer(host="127.0.0.2", greeting="421 4.3.2 Service not available") as server:
        client = aiosmtplib.SMTP(hostname=server.host, port=server.port, start_tls=False, timeout=5)
        with pytest.raises(aiosmtplib.SMTPConnectResponseError) as refused:
            await client.connect()
        assert refused.value.code == 421
        assert "Service not available" in refused.value.message
        [connection] = server.connections()
    assert connection.transactions == ()


async def test_a_scripted_550_refuses_one_recipient_and_the_others_arrive() -> None:
    with ScriptedSmtpServer(
        host="127.0.0.2", rcpt_replies={"gone@rcpt.test.example": "550 5.1.1 No such user"}
    ) as server:
        async with aiosmtplib.SMTP(
            hostname=server.host, port=server.port, start_tls=False, timeout=5
        ) as client:
            refused, _ = await client.sendmail(
                "a@sender.test.example", ["Gone@rcpt.test.example", "here@rcpt.test.example"], MESSAGE
            )
        [arrived] = await server.wait_for(1, timeout=5)
    assert refused["Gone@rcpt.test.example"].code == 550
    assert refused["Gone@rcpt.test.example"].message == "5.1.1 No such user"
    assert arrived.rcpt_tos == ("here@rcpt.test.example",)


async def test_two_transactions_with_rset_between_are_two_on_one_connection(
    plain: ScriptedSmtpServer,
) -> None:
    async with aiosmtplib.SMTP(hostname=plain.host, port=plain.port, start_tls=False, timeout=5) as client:
        await client.sendmail("bounces+1@rp.test.example", ["one@rcpt.test.example"], MESSAGE)
        await client.rset()
        await client.sendmail("bounces+2@rp.test.example", ["two@rcpt.test.example"], MESSAGE + b"Again.\r\n")
    await plain.wait_for(2, timeout=5)
    [connection] = plain.connections()
    assert connection.rsets == 1
    assert [(t.mail_from, t.rcpt_tos) for t in connection.transactions] == [
        ("bounces+1@rp.test.example", ("one@rcpt.test.example",)),
        ("bounces+2@rp.test.example", ("two@rcpt.test.example",)),
    ]
    assert connection.transactions[1].data.endswith(b"Again.\r\n")


async def test_smtputf8_is_offered_or_refused_as_configured() -> None:
    for offered in (True, False):
        with ScriptedSmtpServer(host="127.0.0.2", smtputf8=offered) as server:
            async with aiosmtplib.SMTP(
                hostname=server.host, port=server.port, start_tls=False, timeout=5
            ) as client:
                await client.ehlo()
                assert client.supports_extension("smtputf8") is offered
                if offered:
                    await client.mail("a@sender.test.example", options=["SMTPUTF8"])
                    await client.rcpt("jürgen@rcpt.test.example", encoding="utf-8")
                    await client.data(MESSAGE)
                else:
                    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
                        await client.mail("a@sender.test.example", options=["SMTPUTF8"])
                    assert refused.value.code == 501
            arrived = server.transactions()
        if offered:
            assert [(t.rcpt_tos, t.mail_options) for t in arrived] == [
                (("jürgen@rcpt.test.example",), ("SMTPUTF8",))
            ]
        else:
            assert arrived == []


async def test_8bitmime_and_size_are_advertised_as_configured() -> None:
    with ScriptedSmtpServer(host="127.0.0.2", eightbitmime=False, size_limit=1000) as server:
        async with aiosmtplib.SMTP(
            hostname=server.host, port=server.port, start_tls=False, timeout=5
        ) as client:
            await client.ehlo()
            assert not client.supports_extension("8bitmime")
            assert client.esmtp_extensions["size"] == "1000"
            with pytest.raises(aiosmtplib.SMTPResponseException) as eight_bit:
                await client.mail("a@sender.test.example", options=["BODY=8BITMIME"])
            assert eight_bit.value.code == 555
            with pytest.raises(aiosmtplib.SMTPResponseException) as too_big:
                await client.mail("a@sender.test.example", options=["SIZE=1001"])
            assert too_big.value.code == 552


async def test_replies_are_slowed_by_reply_delay() -> None:
    with ScriptedSmtpServer(host="127.0.0.2", reply_delay=0.3) as server:
        started = time.monotonic()
        client = aiosmtplib.SMTP(hostname=server.host, port=server.port, start_tls=False, timeout=5)
        await client.connect()
        await client.ehlo()
        elapsed = time.monotonic() - started
        client.close()
    assert elapsed >= 0.6


async def test_two_servers_share_one_port_on_different_loopback_addresses() -> None:
    port = free_port_on(["127.0.0.2", "127.0.0.3"])
    with (
        ScriptedSmtpServer(host="127.0.0.2", port=port, hostname="mx1.test.example") as first,
        ScriptedSmtpServer(host="127.0.0.3", port=port, hostname="mx2.test.example") as second,
    ):
        assert first.port == second.port == port
        for server, recipient in ((first, "one@rcpt.test.example"), (second, "two@rcpt.test.example")):
            client = aiosmtplib.SMTP(hostname=server.host, port=port, start_tls=False, timeout=5)
            greeting = await client.connect()
            assert greeting.message.startswith(server.hostname)
            await client.sendmail("a@sender.test.example", [recipient], MESSAGE)
            await client.quit()
        assert [t.rcpt_tos for t in first.transactions()] == [("one@rcpt.test.example",)]
        assert [t.rcpt_tos for t in second.transactions()] == [("two@rcpt.test.example",)]


async def test_a_multiline_reply_to_the_final_dot_refuses_the_message() -> None:
    gmail = (
        "550-5.7.26 Unauthenticated email from sender.test.example is not accepted due to\n"
        "550 5.7.26 domain's DMARC policy. - gsmtp"
    )
    with ScriptedSmtpServer(host="127.0.0.2", data_reply=gmail) as server:
        async with aiosmtplib.SMTP(
            hostname=server.host, port=server.port, start_tls=False, timeout=5
        ) as client:
            with pytest.raises(aiosmtplib.SMTPDataError) as refused:
                await client.sendmail("a@sender.test.example", ["b@rcpt.test.example"], MESSAGE)
        [connection] = server.connections()
    assert refused.value.code == 550
    assert refused.value.message == (
        "5.7.26 Unauthenticated email from sender.test.example is not accepted due to\n"
        "5.7.26 domain's DMARC policy. - gsmtp"
    )
    assert connection.transactions == ()
    assert [t.data for t in connection.refused] == [MESSAGE]


def test_a_scripted_reply_must_be_a_well_formed_smtp_reply() -> None:
    for bad in ("55 no", "5xx no", "550-only a continuation", "550-5.1.1 a\n551 5.1.1 b", "550 a\r\n550 b"):
        with pytest.raises(ValueError):
            ScriptedSmtpServer(rcpt_replies={"x@rcpt.test.example": bad})
    with pytest.raises(ValueError):
        ScriptedSmtpServer(greeting="220 all fine")

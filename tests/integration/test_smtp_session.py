"""mta_worker's SMTP session against scripted servers on loopback (no suite): reuse with RSET,
SIZE, 8BITMIME, SMTPUTF8, TLS policies and AUTH, as the bytes and commands a server records."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from libs.mail.smtp_outcome import Reply
from libs.testing.smtp_servers import ScriptedSmtpServer
from libs.testing.test_ca import TestCa
from services.mta_worker.connection_pool import ConnectionPool
from services.mta_worker.delivery import Letter, RecipientDelivery, Report
from services.mta_worker.endpoints import EndpointPlan
from services.mta_worker.smtp_session import (
    Endpoint,
    SessionBroken,
    SessionFailure,
    SmtpSession,
    Timeouts,
    TlsMode,
)
from services.mta_worker.store import ClaimedRecipient

FAST = Timeouts(*([5.0] * 11))
MESSAGE = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture
async def servers() -> AsyncIterator[list[ScriptedSmtpServer]]:
    started: list[ScriptedSmtpServer] = []
    yield started
    for server in started:
        server.close()
    # The servers hung up on every client: let this loop see it and release the client sockets
    # before the test's loop is closed, or their transports are left to the garbage collector.
    await asyncio.sleep(0.05)


@pytest.fixture(params=[False, True], ids=["serial", "pipelined"])
def pipelining(request: pytest.FixtureRequest) -> bool:
    """Servers without PIPELINING get one command at a time; with it, MAIL, RCPT and DATA in
    one write (RFC 2920). Replies, their pairing and their classification must not differ."""
    return bool(request.param)


def _serve(started: list[ScriptedSmtpServer], **options: object) -> ScriptedSmtpServer:
    server = ScriptedSmtpServer(host="127.0.0.1", port=0, **options).start()  # type: ignore[arg-type]
    started.append(server)
    return server


def _endpoint(server: ScriptedSmtpServer, tls: TlsMode = TlsMode.NONE, **fields: object) -> Endpoint:
    return Endpoint(host="localhost", address="127.0.0.1", port=server.port, tls=tls, **fields)  # type: ignore[arg-type]


async def test_many_transactions_on_one_connection_each_get_their_reply(servers, pipelining: bool) -> None:
    server = _serve(servers, pipelining=pipelining)
    session = await SmtpSession.open(_endpoint(server), helo_name="postwire.test", timeouts=FAST)
    # Large enough to go out in several chunks: the reply to "." must never be lost between them.
    body = MESSAGE + (b"x" * 998 + b"\r\n") * 200
    for n in range(30):
        if n:
            assert await session.reset()
        reply = await session.deliver("bounces+t@rp.example", f"r{n}@example.net", body, smtputf8=False)
        assert reply.code == 250, reply
    await session.quit()
    (connection,) = server.connections()
    assert len(connection.transactions) == 30 and connection.rsets == 29
    assert all(t.data.endswith(b"x" * 998 + b"\r\n") for t in connection.transactions)


async def test_size_is_declared_and_an_oversized_message_is_refused_before_mail(servers) -> None:
    server = _serve(servers, size_limit=1000)
    session = await SmtpSession.open(_endpoint(server), helo_name="postwire.test", timeouts=FAST)
    small = await session.deliver("s@example.com", "r@example.net", MESSAGE, smtputf8=False)
    big = await session.deliver("s@example.com", "r@example.net", MESSAGE + b"y" * 2000, smtputf8=False)
    await session.quit()
    assert small.code == 250
    assert (big.code, big.enhanced) == (552, "5.3.4") and "1000" in big.text
    (transaction,) = server.transactions()
    assert f"SIZE={len(MESSAGE)}" in transaction.mail_options


async def test_8bit_bodies_declare_8bitmime_and_smtputf8_is_used_or_refused(servers) -> None:
    utf8 = _serve(servers)
    ascii_only = _serve(servers, smtputf8=False)
    body = MESSAGE.replace(b"hello", "héllo".encode())
    session = await SmtpSession.open(_endpoint(utf8), helo_name="postwire.test", timeouts=FAST)
    assert (await session.deliver("s@example.com", "josé@example.net", body, smtputf8=True)).code == 250
    await session.quit()
    (transaction,) = utf8.transactions()
    assert "BODY=8BITMIME" in transaction.mail_options and "SMTPUTF8" in transaction.mail_options
    assert transaction.rcpt_tos == ("josé@example.net",)

    plain = await SmtpSession.open(_endpoint(ascii_only), helo_name="postwire.test", timeouts=FAST)
    refused = await plain.deliver("s@example.com", "josé@example.net", body, smtputf8=True)
    await plain.quit()
    assert (refused.code, refused.enhanced) == (553, "5.6.7")
    assert ascii_only.transactions() == []


async def test_required_tls_verifies_the_certificate_and_never_falls_back(servers, tmp_path: Path) -> None:
    trusted, untrusted = TestCa("trusted"), TestCa("untrusted")
    verify = ssl.create_default_context(cafile=str(trusted.ca_file(tmp_path)))
    good = _serve(servers, starttls=trusted.server_context("localhost"))
    bad = _serve(servers, starttls=untrusted.server_context("localhost"))
    none = _serve(servers)

    session = await SmtpSession.open(
        _endpoint(good, TlsMode.REQUIRED, verify=verify), helo_name="h.test", timeouts=FAST
    )
    assert session.remote.tls_verified and session.remote.tls_version.startswith("TLSv1")
    await session.quit()
    for server, why in ((bad, "certificate"), (none, "STARTTLS")):
        with pytest.raises(SessionFailure) as failed:
            await SmtpSession.open(
                _endpoint(server, TlsMode.REQUIRED, verify=verify), helo_name="h.test", timeouts=FAST
            )
        assert failed.value.config and why in failed.value.reply.text
        assert server.transactions() == []


async def test_opportunistic_tls_takes_any_certificate(servers, pipelining: bool) -> None:
    server = _serve(servers, starttls=TestCa("self").server_context("mx.example.net"), pipelining=pipelining)
    session = await SmtpSession.open(
        _endpoint(server, TlsMode.OPPORTUNISTIC), helo_name="h.test", timeouts=FAST
    )
    assert session.remote.tls_version and not session.remote.tls_verified
    assert (await session.deliver("s@example.com", "r@example.net", MESSAGE, smtputf8=False)).code == 250
    await session.quit()
    assert server.transactions()[0].tls is not None


async def test_credentials_are_never_sent_without_tls(servers) -> None:
    server = _serve(servers, auth={"user": "pw"}, auth_require_tls=False)
    endpoint = _endpoint(server, TlsMode.NONE, credentials=("user", "pw"))
    with pytest.raises(SessionFailure) as failed:
        await SmtpSession.open(endpoint, helo_name="h.test", timeouts=FAST)
    assert failed.value.config and "without TLS" in failed.value.reply.text
    assert server.auth_attempts() == []
    assert "pw" not in repr(endpoint)


async def test_a_refused_login_is_a_configuration_failure_not_a_bounce(servers, tmp_path: Path) -> None:
    ca = TestCa("relay")
    server = _serve(servers, starttls=ca.server_context("localhost"), auth={"user": "right"})
    verify = ssl.create_default_context(cafile=str(ca.ca_file(tmp_path)))
    endpoint = _endpoint(server, TlsMode.REQUIRED, verify=verify, credentials=("user", "wrong"))
    with pytest.raises(SessionFailure) as failed:
        await SmtpSession.open(endpoint, helo_name="h.test", timeouts=FAST)
    assert (
        failed.value.config and failed.value.reply.code == 0 and "authentication" in failed.value.reply.text
    )
    assert "wrong" not in failed.value.reply.text
    assert [a.tls for a in server.auth_attempts()] and all(a.tls for a in server.auth_attempts())


async def test_each_phase_has_its_own_time_out(servers, pipelining: bool) -> None:
    slow = _serve(servers, reply_delay=0.3, pipelining=pipelining)
    impatient = Timeouts(connect=5, greeting=0.1, ehlo=0.1)
    with pytest.raises(SessionFailure) as failed:
        await SmtpSession.open(_endpoint(slow), helo_name="h.test", timeouts=impatient)
    assert failed.value.try_next and failed.value.reply.code == 0

    # Patient enough for every command but the reply to ".": the recipient gets a "lost reply"
    # (it may have been delivered), never a bounce.
    patient = Timeouts(connect=5, greeting=2, ehlo=2, mail=2, rcpt=2, data_init=2, data_done=0.1)
    session = await SmtpSession.open(_endpoint(slow), helo_name="h.test", timeouts=patient)
    with pytest.raises(SessionBroken) as broken:
        await session.deliver("s@example.com", "r@example.net", MESSAGE, smtputf8=False)
    assert broken.value.reply.after_final_dot and "may be delivered twice" in broken.value.reply.text
    assert not session.connected


def _delivery(
    server: ScriptedSmtpServer,
    pool: ConnectionPool,
    replies: list[tuple[str, int]],
    *,
    report: Report | None = None,
    sent: Callable[[Reply], None] | None = None,
) -> RecipientDelivery:
    async def record(settled, reply, classification, remote) -> None:
        replies.extend((r.address, reply.code) for r in settled)

    return RecipientDelivery(
        pool,
        EndpointPlan(key="scripted", endpoints=(_endpoint(server),)),
        helo_name="postwire.test",
        timeouts=FAST,
        letter=lambda r: Letter("bounces+t@rp.example", r.address, MESSAGE, smtputf8=False),
        report=report or record,
        sent=sent,
    )


def _recipients(*addresses: str) -> list[ClaimedRecipient]:
    return [ClaimedRecipient(i, a, 0, None) for i, a in enumerate(addresses)]


async def test_rset_is_sent_only_after_a_transaction_left_open(servers, pipelining: bool) -> None:
    # After a reply to "." the server is ready for the next MAIL; RSET then only costs a round
    # trip. After a refused RCPT the MAIL is still open, and RSET must come first.
    server = _serve(
        servers, rcpt_replies={"refused@example.net": "550 5.1.1 no such user"}, pipelining=pipelining
    )
    pool = ConnectionPool(max_messages=100, idle_seconds=60)
    replies: list[tuple[str, int]] = []
    await _delivery(server, pool, replies).run(_recipients("a@example.net", "b@example.net"))
    await _delivery(server, pool, replies).run(_recipients("c@example.net", "refused@example.net"))
    await _delivery(server, pool, replies).run(_recipients("d@example.net"))
    await pool.close()
    assert replies == [
        ("a@example.net", 250),
        ("b@example.net", 250),
        ("c@example.net", 250),
        ("refused@example.net", 550),
        ("d@example.net", 250),
    ]
    (connection,) = server.connections()
    assert len(connection.transactions) == 4 and connection.rsets == 1


async def test_a_pooled_connection_that_died_while_idle_is_replaced_without_an_attempt(
    servers, pipelining: bool
) -> None:
    server = _serve(servers, pipelining=pipelining)
    pool = ConnectionPool(max_messages=100, idle_seconds=60)
    replies: list[tuple[str, int]] = []
    await _delivery(server, pool, replies).run(_recipients("a@example.net"))
    idle = pool.take("scripted")
    assert idle is not None
    idle._client.transport.abort()  # the server (or a NAT) dropped it while it sat in the pool
    pool.give_back("scripted", idle)
    await _delivery(server, pool, replies).run(_recipients("b@example.net"))
    await pool.close()
    # One reply per recipient, both delivered: the dead connection cost no attempt.
    assert replies == [("a@example.net", 250), ("b@example.net", 250)]
    assert sum(len(c.transactions) for c in server.connections()) == 2


async def test_the_connection_serves_other_mail_while_the_last_outcome_is_made_durable(
    servers, pipelining: bool
) -> None:
    # The message is acked only after its outcome is committed, but the connection (and the
    # destination's slot, through `sent`) need not wait for that commit.
    server = _serve(servers, pipelining=pipelining)
    pool = ConnectionPool(max_messages=100, idle_seconds=60)
    durable = asyncio.Event()
    recording_started = asyncio.Event()
    reported: list[tuple[str, int]] = []
    sent: list[int] = []

    async def report_slowly(settled, reply, classification, remote) -> None:
        reported.extend((r.address, reply.code) for r in settled)
        recording_started.set()
        await durable.wait()

    first = _delivery(server, pool, [], report=report_slowly, sent=lambda reply: sent.append(reply.code))
    recording = asyncio.create_task(first.run(_recipients("a@example.net")))
    await asyncio.wait_for(recording_started.wait(), 10)
    assert sent == [250]
    replies: list[tuple[str, int]] = []
    await _delivery(server, pool, replies).run(_recipients("b@example.net"))
    assert not recording.done()
    durable.set()
    await recording
    await pool.close()
    assert reported == [("a@example.net", 250)] and replies == [("b@example.net", 250)]
    (connection,) = server.connections()
    assert len(connection.transactions) == 2

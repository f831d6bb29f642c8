"""The SMTP listener on loopback with a fake use case: RCPT refusals, STARTTLS, the size cap, the
per-address connection limit, and garbage that never stops it serving."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import aiosmtplib
import pytest

from libs.return_path import ReturnPathConfig, ReturnPathTokens
from libs.testing.test_ca import TestCa
from libs.token_keys import KeyRing, generate_token_keys
from services.inbound.config import MAX_MESSAGE_BYTES
from services.inbound.listener import InboundListener
from services.inbound.recipients import Rcpt

TOKENS = ReturnPathTokens(KeyRing.parse(generate_token_keys("unit")))
FORGER = ReturnPathTokens(KeyRing.parse(generate_token_keys("forger")))
CONFIG = ReturnPathConfig(host="bounces.postwire.example", label="pw-bounces")
CA = TestCa()


class Taken:
    def __init__(self) -> None:
        self.reports: list[tuple[bytes, list[Rcpt]]] = []
        self.fail: Exception | None = None

    async def __call__(self, raw: bytes, rcpts: Sequence[Rcpt]) -> str:
        if self.fail is not None:
            raise self.fail
        self.reports.append((raw, list(rcpts)))
        return "bounced"


@pytest.fixture
async def listener() -> AsyncIterator[tuple[InboundListener, Taken]]:
    taken = Taken()
    server = InboundListener(
        taken,
        host="127.0.0.1",
        port=0,
        hostname="inbound.postwire.example",
        return_path=CONFIG,
        tokens=TOKENS,
        max_message_bytes=MAX_MESSAGE_BYTES,
        max_connections_per_ip=3,
        tls=CA.server_context("inbound.postwire.example", "127.0.0.1"),
    )
    await server.start()
    yield server, taken
    await server.stop(grace=1)


def _client(server: InboundListener, **kwargs: object) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, start_tls=False, timeout=10, **kwargs)  # type: ignore[arg-type]


def _return_path() -> str:
    return f"bounces+{TOKENS.mint(str(uuid.uuid4()), 0)}@{CONFIG.host}"


async def test_reports_are_taken_over_starttls(listener) -> None:
    server, taken = listener
    client = _client(server, tls_context=CA.client_context())
    await client.connect()
    await client.ehlo()
    assert client.supports_extension("starttls")
    await client.starttls()
    rcpt = _return_path()
    errors, _ = await client.sendmail("", [rcpt, f"fbl@{CONFIG.host}"], b"Subject: x\r\n\r\nbody\r\n")
    await client.quit()
    assert errors == {}
    ((raw, rcpts),) = taken.reports
    assert b"body" in raw and [r.kind.value for r in rcpts] == ["return-path", "feedback-loop"]


async def test_unknown_and_forged_recipients_are_refused_at_rcpt(listener) -> None:
    server, taken = listener
    async with _client(server) as client:
        await client.ehlo()
        await client.mail("")
        for address in (
            f"someone@{CONFIG.host}",
            f"bounces+{FORGER.mint(str(uuid.uuid4()), 0)}@{CONFIG.host}",
            "postmaster@example.org",
        ):
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await client.rcpt(address)
            assert (refused.value.code, refused.value.message[:5]) == (550, "5.1.1")
    assert taken.reports == []


async def test_size_is_advertised_and_a_larger_message_refused(listener) -> None:
    server, _ = listener
    async with _client(server) as client:
        await client.ehlo()
        assert client.esmtp_extensions["size"] == str(MAX_MESSAGE_BYTES)
        code, _ = await client.execute_command(b"MAIL", b"FROM:<>", f"SIZE={MAX_MESSAGE_BYTES + 1}".encode())
        assert code == 552


async def test_connections_over_the_per_address_limit_get_421(listener) -> None:
    server, _ = listener
    held = [_client(server) for _ in range(3)]
    for client in held:
        await client.connect()
    extra = _client(server)
    with pytest.raises(aiosmtplib.SMTPConnectResponseError) as refused:
        await extra.connect()
    assert refused.value.code == 421
    held[0].close()

    async def admitted() -> None:
        while True:
            again = _client(server)
            try:
                await again.connect()
                await again.quit()
                return
            except aiosmtplib.SMTPConnectResponseError:
                await asyncio.sleep(0.05)

    await asyncio.wait_for(admitted(), 5)
    for client in held[1:]:
        await client.quit()


async def test_garbage_never_stops_the_listener(listener) -> None:
    server, taken = listener
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    await reader.readline()
    writer.write(b"\x00\xff\xfe\x80 garbage\r\n" + b"A" * 5000 + b"\r\nEHLO x\r\nMAIL FROM:<>\r\n")
    writer.write(f"RCPT TO:<fbl@{CONFIG.host}>\r\nDATA\r\n".encode())
    writer.write(b"\xff\xfe\x00 not mail at all \x81\r\n..\r\n.\r\n")
    await writer.drain()
    replies = b""
    while b"\r\n250 2.0.0" not in replies and b"\r\n550 5.6.0" not in replies:
        chunk = await asyncio.wait_for(reader.read(4096), 5)
        assert chunk, replies
        replies += chunk
    writer.close()
    # A use case that blows up is a 550 (a bug, the sender gives up), never a dropped session.
    taken.fail = RuntimeError("boom")
    async with _client(server) as client:
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await client.sendmail("", [f"fbl@{CONFIG.host}"], b"\x00\x01garbage")
        assert refused.value.code == 550
    taken.fail = None
    async with _client(server) as client:
        await client.sendmail("", [f"fbl@{CONFIG.host}"], b"Subject: fine\r\n\r\nok\r\n")
    assert len(taken.reports) == 2

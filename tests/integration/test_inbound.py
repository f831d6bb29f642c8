"""The inbound role end to end: a message goes out through the edge, its recipient's return path
is read at the SMTP sink, and a DSN or an ARF report built with the standard library is sent to
the inbound listener by a real SMTP client (aiosmtplib). What the user sees: asynchronous events
over ListEvents, the recipient's state over GetMessage, and the public suppression list."""

from __future__ import annotations

import asyncio
from typing import Any

import aiosmtplib
import asyncpg
import grpc
import pytest
from postwire.v1 import (
    event_pb2,
    mail_service_pb2,
    mail_service_pb2_grpc,
    message_pb2,
    suppression_service_pb2,
    suppression_service_pb2_grpc,
)

from libs.capture import ReceivedMessage
from libs.return_path import DEFAULT_HOST
from libs.testing.polling import poll_until
from libs.testing.reports import arf_report, dsn_report
from tests.integration.helpers import events_of, mail, unique, wait_for_events, wait_for_mail

DELIVERED, BOUNCED, COMPLAINED = (
    event_pb2.EVENT_TYPE_DELIVERED,
    event_pb2.EVENT_TYPE_BOUNCED,
    event_pb2.EVENT_TYPE_COMPLAINED,
)
FEEDBACK_LOOP = f"fbl@{DEFAULT_HOST}"


def _inbound(suite: Any) -> tuple[str, int]:
    return "127.0.0.1", suite.ports.ports["inbound_smtp"]


async def _send_report(suite: Any, rcpt: str, raw: bytes) -> None:
    host, port = _inbound(suite)
    # A DSN's envelope sender is null (RFC 3464 §2); an ARF report's is the loop's own address.
    async with aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, timeout=20) as client:
        errors, _ = await client.sendmail("", [rcpt], raw)
    assert errors == {}


async def _delivered(edge: Any, tenant: Any, smtp_sink: Any) -> tuple[str, str, ReceivedMessage]:
    rcpt = unique("async")
    answer = await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
        mail(to=[{"address": rcpt}]), metadata=tenant.metadata
    )
    (received,) = await wait_for_mail(smtp_sink, rcpt)
    await wait_for_events(edge, tenant.metadata, answer.message_id, [DELIVERED])
    return rcpt, answer.message_id, received


async def _suppression(edge: Any, tenant: Any, address: str) -> suppression_service_pb2.Suppression | None:
    stub = suppression_service_pb2_grpc.SuppressionServiceStub(edge)
    try:
        got = await stub.GetSuppression(
            suppression_service_pb2.GetSuppressionRequest(address=address),
            metadata=tenant.metadata,
            timeout=10,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    return got.suppression


async def _recipient_state(edge: Any, tenant: Any, message_id: str) -> int:
    got = await mail_service_pb2_grpc.MailServiceStub(edge).GetMessage(
        mail_service_pb2.GetMessageRequest(message_id=message_id), metadata=tenant.metadata
    )
    return got.message.recipients[0].state


async def _counter(suite: Any, name: str) -> int:
    conn = await asyncpg.connect(suite.database_url)
    try:
        return int(
            await conn.fetchval("SELECT coalesce(max(count), 0) FROM inbound_counters WHERE name = $1", name)
        )
    finally:
        await conn.close()


async def test_a_dsn_to_the_return_path_bounces_the_delivered_recipient_and_suppresses_it(
    suite, edge, tenant, smtp_sink
) -> None:
    rcpt, message_id, received = await _delivered(edge, tenant, smtp_sink)
    return_path = received.mail_from
    assert return_path.startswith("bounces+") and return_path.endswith(f"@{DEFAULT_HOST}")
    dsn = dsn_report(recipient=rcpt, original=received.data, to=return_path)
    await _send_report(suite, return_path, dsn)

    events = await wait_for_events(edge, tenant.metadata, message_id, [DELIVERED, BOUNCED])
    (bounce,) = [e for e in events if e.type == BOUNCED]
    assert bounce.asynchronous
    assert bounce.recipient == rcpt
    assert bounce.bounce_category == message_pb2.BOUNCE_CATEGORY_HARD
    assert (bounce.smtp_reply.code, bounce.smtp_reply.enhanced_code) == (550, "5.1.1")
    assert "Recipient address rejected" in bounce.smtp_reply.text
    assert bounce.remote.host == "mx1.example.net"
    assert await _recipient_state(edge, tenant, message_id) == message_pb2.RECIPIENT_STATE_BOUNCED

    suppression = await poll_until(
        lambda: _suppression(edge, tenant, rcpt), timeout=30, what=f"suppression of {rcpt}"
    )
    assert suppression.reason == suppression_service_pb2.SUPPRESSION_REASON_HARD_BOUNCE
    assert suppression.source_message_id == message_id

    # The receiver sends the same report again: still one bounce.
    duplicates = await _counter(suite, "duplicate")
    await _send_report(suite, return_path, dsn)
    await poll_until(lambda: _more(suite, "duplicate", duplicates), timeout=10, what="the duplicate counted")
    assert [e.type for e in await events_of(edge, tenant.metadata, message_id)].count(BOUNCED) == 1


async def _more(suite: Any, name: str, than: int) -> bool:
    return await _counter(suite, name) > than


async def test_a_delay_notice_changes_nothing(suite, edge, tenant, smtp_sink) -> None:
    rcpt, message_id, received = await _delivered(edge, tenant, smtp_sink)
    ignored = await _counter(suite, "ignored")
    await _send_report(
        suite, received.mail_from, dsn_report(recipient=rcpt, action="delayed", status="4.4.7")
    )
    await poll_until(lambda: _more(suite, "ignored", ignored), timeout=10, what="the delay notice counted")
    assert BOUNCED not in [e.type for e in await events_of(edge, tenant.metadata, message_id)]
    assert await _recipient_state(edge, tenant, message_id) == message_pb2.RECIPIENT_STATE_DELIVERED


@pytest.mark.parametrize("matched_by", ["feedback-id header", "return path"])
async def test_an_arf_report_to_the_feedback_loop_is_a_complaint_and_suppresses(
    suite, edge, tenant, smtp_sink, matched_by: str
) -> None:
    rcpt, message_id, received = await _delivered(edge, tenant, smtp_sink)
    assert received.header("X-Postwire-Feedback-Id")
    if matched_by == "return path":
        # What the receiving MTA recorded, and the token header gone: the Return-Path alone names it.
        lines = received.data.split(b"\r\n")
        original = b"\r\n".join(
            [f"Return-Path: <{received.mail_from}>".encode()]
            + [line for line in lines if not line.lower().startswith(b"x-postwire-feedback-id:")]
        )
    else:
        original = received.data
    # The loop returns the original's headers only; the sink's copy has no Return-Path (the final
    # MTA adds it), so without one only the signed X-Postwire-Feedback-Id names the recipient.
    report = arf_report(original=original, rcpt_to=rcpt, headers_only=True)
    await _send_report(suite, FEEDBACK_LOOP, report)

    events = await wait_for_events(edge, tenant.metadata, message_id, [DELIVERED, COMPLAINED])
    (complaint,) = [e for e in events if e.type == COMPLAINED]
    assert complaint.asynchronous and complaint.recipient == rcpt
    assert "abuse" in complaint.reason
    # A complaint says nothing about delivery.
    assert await _recipient_state(edge, tenant, message_id) == message_pb2.RECIPIENT_STATE_DELIVERED
    suppression = await poll_until(
        lambda: _suppression(edge, tenant, rcpt), timeout=30, what=f"suppression of {rcpt}"
    )
    assert suppression.reason == suppression_service_pb2.SUPPRESSION_REASON_COMPLAINT

    duplicates = await _counter(suite, "duplicate")
    await _send_report(suite, FEEDBACK_LOOP, report)
    await poll_until(lambda: _more(suite, "duplicate", duplicates), timeout=10, what="the duplicate counted")
    assert [e.type for e in await events_of(edge, tenant.metadata, message_id)].count(COMPLAINED) == 1


async def test_a_report_without_a_token_is_counted_as_unmatched(suite, edge, tenant, smtp_sink) -> None:
    unmatched = await _counter(suite, "unmatched")
    original = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: not ours\r\n\r\nhi\r\n"
    await _send_report(suite, FEEDBACK_LOOP, arf_report(original=original))
    await poll_until(lambda: _more(suite, "unmatched", unmatched), timeout=10, what="the report counted")


@pytest.mark.parametrize(
    "address",
    [
        f"someone@{DEFAULT_HOST}",
        # A well-formed token under a key the installation does not have.
        f"bounces+{'a' * 48}@{DEFAULT_HOST}",
        "postmaster@example.org",
    ],
)
async def test_unknown_and_forged_recipients_are_refused_at_rcpt(suite, address: str) -> None:
    host, port = _inbound(suite)
    async with aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, timeout=10) as client:
        await client.mail("")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await client.rcpt(address)
    assert refused.value.code == 550


async def test_garbage_after_data_is_dropped_and_the_listener_keeps_serving(suite) -> None:
    malformed = await _counter(suite, "malformed")
    host, port = _inbound(suite)
    reader, writer = await asyncio.open_connection(host, port)
    await reader.readline()
    writer.write(b"\x16\x03\x01\x00\xa5 not smtp at all\r\nEHLO x\r\nMAIL FROM:<>\r\n")
    writer.write(f"RCPT TO:<{FEEDBACK_LOOP}>\r\nDATA\r\n".encode())
    writer.write(b"\xff\xfe\x00\x81 garbage\r\nContent-Type: multipart/report\r\n\r\n--\r\n.\r\n")
    await writer.drain()
    replies = b""
    while b"250 2.0.0" not in replies:
        chunk = await asyncio.wait_for(reader.read(4096), 10)
        assert chunk, replies
        replies += chunk
    writer.close()
    await poll_until(lambda: _more(suite, "malformed", malformed), timeout=10, what="the garbage counted")
    assert suite.processes["inbound"].running()
    async with aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, timeout=10) as client:
        code, _ = await client.noop()
        assert code == 250

"""Bounce categories on events, and automatic suppression of hard bounces: the events service adds
the address to the tenant's list through policy, from an outbox, so an outage of policy delays the
suppression but never loses it. Mailbox full is retried and never suppresses."""

from __future__ import annotations

from typing import Any

import asyncpg
import grpc
from postwire.v1 import (
    event_pb2,
    mail_service_pb2_grpc,
    message_pb2,
    suppression_service_pb2,
    suppression_service_pb2_grpc,
)

from libs.testing.polling import poll_until
from tests.integration.helpers import events_of, mail, unique, wait_for_events, wait_for_mail

DEFERRED, DELIVERED, BOUNCED = (
    event_pb2.EVENT_TYPE_DEFERRED,
    event_pb2.EVENT_TYPE_DELIVERED,
    event_pb2.EVENT_TYPE_BOUNCED,
)
HARD, SOFT = message_pb2.BOUNCE_CATEGORY_HARD, message_pb2.BOUNCE_CATEGORY_SOFT
HARD_BOUNCE = suppression_service_pb2.SUPPRESSION_REASON_HARD_BOUNCE


async def _suppression(
    edge: grpc.aio.Channel, tenant: Any, address: str
) -> suppression_service_pb2.Suppression | None:
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


async def _pending(database_url: str, address: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(
            await conn.fetch(
                "SELECT attempts, last_error FROM suppression_outbox WHERE address = $1", address
            )
        )
    finally:
        await conn.close()


async def test_hard_bounce_is_suppressed_and_the_next_send_is_dropped(edge, tenant, smtp_sink) -> None:
    rcpt = unique("permfail")
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    first = await stub.SendEmail(mail(to=[{"address": rcpt}]), metadata=tenant.metadata)

    events = await wait_for_events(edge, tenant.metadata, first.message_id, [BOUNCED])
    (bounce,) = [e for e in events if e.type == BOUNCED]
    assert bounce.bounce_category == HARD
    assert (bounce.smtp_reply.code, bounce.smtp_reply.enhanced_code) == (550, "5.1.1")
    assert bounce.smtp_reply.text == "5.1.1 User unknown"

    suppression = await poll_until(
        lambda: _suppression(edge, tenant, rcpt), timeout=30, what=f"a suppression for {rcpt}"
    )
    assert suppression.reason == HARD_BOUNCE
    assert suppression.source_message_id == first.message_id
    assert not suppression.unsubscribe_group and not suppression.HasField("expire_time")

    second = await stub.SendEmail(mail(to=[{"address": rcpt}]), metadata=tenant.metadata)
    assert [r.state for r in second.recipients] == [message_pb2.RECIPIENT_STATE_SUPPRESSED]
    # One RCPT ever: the second message never reached the server.
    assert [a for a in smtp_sink.attempts() if a[0] == rcpt] == [(rcpt, "RCPT", "550")]


async def test_mailbox_full_is_deferred_as_soft_and_never_suppressed(suite, edge, tenant, smtp_sink) -> None:
    rcpt = unique("full2")
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    answer = await stub.SendEmail(mail(to=[{"address": rcpt}]), metadata=tenant.metadata)

    await wait_for_mail(smtp_sink, rcpt, timeout=40)
    events = await wait_for_events(edge, tenant.metadata, answer.message_id, [DEFERRED, DEFERRED, DELIVERED])
    deferred = [e for e in events if e.type == DEFERRED]
    assert [(e.smtp_reply.code, e.smtp_reply.enhanced_code, e.bounce_category) for e in deferred] == [
        (552, "5.2.2", SOFT),
        (552, "5.2.2", SOFT),
    ]
    assert BOUNCED not in [e.type for e in events]
    (delivered,) = [e for e in events if e.type == DELIVERED]
    assert delivered.bounce_category == message_pb2.BOUNCE_CATEGORY_UNSPECIFIED
    # The events are stored, and a suppression would have been queued in the same transaction.
    assert await _pending(suite.database_url, rcpt) == []
    assert await _suppression(edge, tenant, rcpt) is None


async def test_hard_bounce_is_suppressed_once_policy_is_back(suite, edge, tenant, smtp_sink) -> None:
    rcpt = unique("permfail")
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    # Hold the bounce event back (events down) until policy is down as well: SendEmail itself
    # needs policy, so this is the order in which a bounce can meet a policy outage.
    assert suite.processes["events"].stop(timeout=20) == 0
    try:
        answer = await stub.SendEmail(mail(to=[{"address": rcpt}]), metadata=tenant.metadata)

        async def rejected() -> bool:
            return (rcpt, "RCPT", "550") in smtp_sink.attempts()

        await poll_until(rejected, timeout=30, what=f"the 550 for {rcpt}")
        assert suite.processes["policy"].stop(timeout=20) == 0
        suite.start_service("events")

        async def tried() -> list[asyncpg.Record]:
            return [r for r in await _pending(suite.database_url, rcpt) if r["attempts"] >= 2]

        (row,) = await poll_until(tried, timeout=30, what=f"failed attempts to suppress {rcpt}")
        assert row["last_error"]  # the error class, kept for an operator

        suite.start_service("policy")
        suppression = await poll_until(
            lambda: _suppression(edge, tenant, rcpt), timeout=60, what=f"a suppression for {rcpt}"
        )
        assert (suppression.reason, suppression.source_message_id) == (HARD_BOUNCE, answer.message_id)
        assert await poll_until(
            lambda: _gone(suite.database_url, rcpt), timeout=10, what="the outbox row retired"
        )
        (bounce,) = [
            e for e in await events_of(edge, tenant.metadata, answer.message_id) if e.type == BOUNCED
        ]
        assert bounce.bounce_category == HARD
    finally:
        for name in ("events", "policy"):
            if not suite.processes[name].running():
                suite.start_service(name)


async def _gone(database_url: str, address: str) -> bool:
    return await _pending(database_url, address) == []

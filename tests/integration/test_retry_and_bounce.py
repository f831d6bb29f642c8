"""Temporary failures are retried from PostgreSQL's schedule; permanent ones become bounces."""

from __future__ import annotations

from postwire.v1 import event_pb2, mail_service_pb2, mail_service_pb2_grpc, message_pb2

from tests.integration.helpers import events_of, mail, unique, wait_for_events, wait_for_mail

DEFERRED, DELIVERED, BOUNCED = (
    event_pb2.EVENT_TYPE_DEFERRED,
    event_pb2.EVENT_TYPE_DELIVERED,
    event_pb2.EVENT_TYPE_BOUNCED,
)


async def test_greylisted_recipient_is_retried_and_delivered_later(edge, tenant, smtp_sink) -> None:
    rcpt = unique("greylist2")
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    answer = await stub.SendEmail(mail(to=[{"address": rcpt}]), metadata=tenant.metadata)

    (received,) = await wait_for_mail(smtp_sink, rcpt, timeout=40)
    assert received.header("X-Postwire-Message-Id") == answer.message_id
    rcpt_replies = [
        code for address, phase, code in smtp_sink.attempts() if address == rcpt and phase == "RCPT"
    ]
    assert rcpt_replies == ["451", "451", "250"]

    events = await wait_for_events(edge, tenant.metadata, answer.message_id, [DEFERRED, DEFERRED, DELIVERED])
    deferred = [e for e in events if e.type == DEFERRED]
    assert [e.attempt for e in deferred] == [1, 2]
    assert all(e.smtp_reply.code == 451 and e.smtp_reply.enhanced_code == "4.7.1" for e in deferred)
    assert all(e.next_attempt_time.seconds > 0 for e in deferred)
    (delivered,) = [e for e in events if e.type == DELIVERED]
    assert delivered.attempt == 3

    got = await stub.GetMessage(
        mail_service_pb2.GetMessageRequest(message_id=answer.message_id), metadata=tenant.metadata
    )
    (status,) = got.message.recipients
    assert status.state == message_pb2.RECIPIENT_STATE_DELIVERED and status.attempts == 3


async def test_dropped_connection_is_deferred_and_retried(edge, tenant, smtp_sink) -> None:
    rcpt = unique("disconnect")
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    answer = await stub.SendEmail(mail(to=[{"address": rcpt}]), metadata=tenant.metadata)
    await wait_for_mail(smtp_sink, rcpt, timeout=40)
    events = await wait_for_events(edge, tenant.metadata, answer.message_id, [DEFERRED, DELIVERED])
    (deferred,) = [e for e in events if e.type == DEFERRED]
    assert deferred.smtp_reply.code == 0 and "connection" in deferred.smtp_reply.text


async def test_permanent_failure_is_a_bounce_with_the_reply_and_no_retry(edge, tenant, smtp_sink) -> None:
    bad, good = unique("permfail"), unique()
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    answer = await stub.SendEmail(mail(to=[{"address": bad}, {"address": good}]), metadata=tenant.metadata)

    (received,) = await wait_for_mail(smtp_sink, good)
    assert received.rcpt_tos == (good,)
    events = await wait_for_events(edge, tenant.metadata, answer.message_id, [BOUNCED, DELIVERED])
    (bounce,) = [e for e in events if e.type == BOUNCED]
    assert bounce.recipient == bad
    assert (bounce.smtp_reply.code, bounce.smtp_reply.enhanced_code) == (550, "5.1.1")
    assert "User unknown" in bounce.smtp_reply.text

    got = await stub.GetMessage(
        mail_service_pb2.GetMessageRequest(message_id=answer.message_id), metadata=tenant.metadata
    )
    states = {r.address: r.state for r in got.message.recipients}
    assert states == {bad: message_pb2.RECIPIENT_STATE_BOUNCED, good: message_pb2.RECIPIENT_STATE_DELIVERED}
    # A bounce is final: one RCPT attempt only, and no DEFERRED ever.
    assert [a for a in smtp_sink.attempts() if a[0] == bad] == [(bad, "RCPT", "550")]
    assert DEFERRED not in [e.type for e in await events_of(edge, tenant.metadata, answer.message_id)]


async def test_rejection_at_end_of_data_bounces_every_recipient(edge, tenant, smtp_sink) -> None:
    rcpt = unique("datafail")
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    answer = await stub.SendEmail(mail(to=[{"address": rcpt}]), metadata=tenant.metadata)
    events = await wait_for_events(edge, tenant.metadata, answer.message_id, [BOUNCED])
    (bounce,) = [e for e in events if e.type == BOUNCED]
    assert bounce.smtp_reply.code == 554
    assert not [m for m in smtp_sink.messages() if rcpt in m.rcpt_tos]

"""GetMessage answers with the message's timeline, read from the events service; without the
events service it answers UNAVAILABLE (a message with no events would be a wrong answer)."""

from __future__ import annotations

import grpc
from postwire.v1 import event_pb2, mail_service_pb2, mail_service_pb2_grpc

from libs.grpcx.status import retry_delay
from libs.testing.polling import poll_until
from tests.integration.helpers import events_of, mail, unique, wait_for_events

ACCEPTED, DELIVERED = event_pb2.EVENT_TYPE_ACCEPTED, event_pb2.EVENT_TYPE_DELIVERED


async def test_get_message_returns_its_events_oldest_first(edge, tenant) -> None:
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    sent = await stub.SendEmail(
        mail(to=[{"address": unique()}, {"address": unique()}]), metadata=tenant.metadata
    )
    # Another message of the same tenant: its events must not appear.
    await stub.SendEmail(mail(), metadata=tenant.metadata)
    await wait_for_events(edge, tenant.metadata, sent.message_id, [ACCEPTED, ACCEPTED, DELIVERED, DELIVERED])

    answer = await stub.GetMessage(
        mail_service_pb2.GetMessageRequest(message_id=sent.message_id), metadata=tenant.metadata
    )

    # ListEvents is in storage order; the timeline is in the order things happened.
    stored = await events_of(edge, tenant.metadata, sent.message_id)
    by_time = sorted(stored, key=lambda e: (e.create_time.seconds, e.create_time.nanos))
    assert [e.id for e in answer.timeline] == [e.id for e in by_time]
    assert sorted(e.type for e in answer.timeline) == [ACCEPTED, ACCEPTED, DELIVERED, DELIVERED]
    assert {e.message_id for e in answer.timeline} == {sent.message_id}
    times = [e.create_time.ToDatetime() for e in answer.timeline]
    assert times == sorted(times)


async def test_get_message_is_unavailable_while_the_events_service_is_down(suite, edge, tenant) -> None:
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    sent = await stub.SendEmail(mail(), metadata=tenant.metadata)
    await wait_for_events(edge, tenant.metadata, sent.message_id, [ACCEPTED, DELIVERED])
    request = mail_service_pb2.GetMessageRequest(message_id=sent.message_id)
    suite.processes["events"].stop(timeout=30)
    try:
        try:
            await stub.GetMessage(request, metadata=tenant.metadata, timeout=30)
        except grpc.aio.AioRpcError as exc:
            error: grpc.aio.AioRpcError | None = exc
        else:
            error = None
        assert error is not None, "GetMessage answered without its timeline"
        assert error.code() == grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())
        assert retry_delay(error) is not None
    finally:
        suite.start_service("events")

    async def recovered() -> list[int]:
        try:
            answer = await stub.GetMessage(request, metadata=tenant.metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, (exc.code(), exc.details())
            return []
        return [e.type for e in answer.timeline]

    # Back once the events service is: the submission's channel reconnects on its own.
    assert await poll_until(recovered, timeout=20, what="GetMessage with its timeline") == [
        ACCEPTED,
        DELIVERED,
    ]

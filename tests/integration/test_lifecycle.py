"""Clean SIGTERM shutdowns, and sweepers that recover work JetStream lost."""

from __future__ import annotations

import nats
import pytest
from postwire.v1 import event_pb2, mail_service_pb2, mail_service_pb2_grpc, message_pb2

from libs.bus import EVENTS_STREAM, WORK_STREAM
from libs.embedded.suite import SERVICES
from tests.integration.helpers import events_of, mail, unique, wait_for_events, wait_for_mail


@pytest.mark.parametrize("service", SERVICES)
async def test_sigterm_exits_cleanly_and_the_service_comes_back(
    suite, edge, tenant, smtp_sink, service
) -> None:
    assert suite.processes[service].stop(timeout=20) == 0
    assert "stopped" in suite.processes[service].output()
    suite.start_service(service)
    rcpt = unique()
    await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
        mail(to=[{"address": rcpt}]), metadata=tenant.metadata
    )
    await wait_for_mail(smtp_sink, rcpt)


async def _purge(suite, stream: str) -> None:
    nc = await nats.connect(suite.nats_url)
    try:
        await nc.jetstream().purge_stream(stream)
    finally:
        await nc.drain()


async def test_route_task_lost_by_jetstream_is_recovered_by_the_sweeper(
    suite, edge, tenant, smtp_sink
) -> None:
    assert suite.processes["router"].stop(timeout=20) == 0
    rcpt = unique()
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    answer = await stub.SendEmail(mail(to=[{"address": rcpt}]), metadata=tenant.metadata)
    # The task sits in the stream for the stopped router; wipe it, as a lost JetStream store would.
    await _purge(suite, WORK_STREAM)
    suite.start_service("router")
    (received,) = await wait_for_mail(smtp_sink, rcpt, timeout=40)
    assert received.header("X-Postwire-Message-Id") == answer.message_id
    got = await stub.GetMessage(
        mail_service_pb2.GetMessageRequest(message_id=answer.message_id), metadata=tenant.metadata
    )
    assert got.message.recipients[0].state == message_pb2.RECIPIENT_STATE_DELIVERED


async def test_events_lost_by_jetstream_are_republished_from_the_outbox(
    suite, edge, tenant, smtp_sink
) -> None:
    assert suite.processes["events"].stop(timeout=20) == 0
    rcpt = unique()
    answer = await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
        mail(to=[{"address": rcpt}]), metadata=tenant.metadata
    )
    await wait_for_mail(smtp_sink, rcpt)
    await _purge(suite, EVENTS_STREAM)
    suite.start_service("events")
    events = await wait_for_events(
        edge,
        tenant.metadata,
        answer.message_id,
        [event_pb2.EVENT_TYPE_ACCEPTED, event_pb2.EVENT_TYPE_DELIVERED],
        timeout=40,
    )
    assert sorted(e.type for e in events) == [event_pb2.EVENT_TYPE_ACCEPTED, event_pb2.EVENT_TYPE_DELIVERED]
    assert len(await events_of(edge, tenant.metadata, answer.message_id)) == 2


async def test_send_fails_closed_while_policy_is_down(suite, edge, tenant, smtp_sink) -> None:
    import asyncpg
    import grpc

    assert suite.processes["policy"].stop(timeout=20) == 0
    rcpt = unique()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
                mail(to=[{"address": rcpt}]), metadata=tenant.metadata, timeout=30
            )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        conn = await asyncpg.connect(suite.database_url)
        try:
            stored = await conn.fetchval("SELECT count(*) FROM recipients WHERE address = $1", rcpt)
        finally:
            await conn.close()
        assert stored == 0
    finally:
        suite.start_service("policy")

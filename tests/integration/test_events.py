"""ListEvents filters and pages; StreamEvents tails live; nothing crosses tenants."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest
from google.protobuf import timestamp_pb2
from postwire.v1 import (
    event_pb2,
    event_service_pb2,
    event_service_pb2_grpc,
    mail_service_pb2,
    mail_service_pb2_grpc,
)

from tests.conftest import create_tenant
from tests.integration.helpers import bad_request_fields, events_of, mail, unique, wait_for_events

ACCEPTED, DELIVERED = event_pb2.EVENT_TYPE_ACCEPTED, event_pb2.EVENT_TYPE_DELIVERED


async def test_stream_events_tails_a_message_from_accepted_to_delivered(edge, tenant) -> None:
    events = event_service_pb2_grpc.EventServiceStub(edge)
    # start_time replays from just before the send, so the tail cannot miss an early event.
    start = timestamp_pb2.Timestamp()
    start.FromSeconds(int(time.time()) - 1)
    stream = events.StreamEvents(
        event_service_pb2.StreamEventsRequest(start_time=start), metadata=tenant.metadata
    )
    answer = await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(mail(), metadata=tenant.metadata)
    seen: list[int] = []

    async def read() -> None:
        async for item in stream:
            if item.event.message_id == answer.message_id:
                seen.append(item.event.type)
                if DELIVERED in seen:
                    return

    await asyncio.wait_for(read(), timeout=30)
    stream.cancel()
    assert seen == [ACCEPTED, DELIVERED]


async def test_list_events_filters_and_pages(edge, tenant) -> None:
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    target = unique()
    ids = []
    for _ in range(3):
        answer = await stub.SendEmail(
            mail(to=[{"address": target}, {"address": unique()}]), metadata=tenant.metadata
        )
        ids.append(answer.message_id)
    for message_id in ids:
        await wait_for_events(edge, tenant.metadata, message_id, [ACCEPTED, ACCEPTED, DELIVERED, DELIVERED])

    events = event_service_pb2_grpc.EventServiceStub(edge)
    by_recipient = await events.ListEvents(
        event_service_pb2.ListEventsRequest(recipient=target.upper(), types=[DELIVERED]),
        metadata=tenant.metadata,
    )
    assert sorted(e.message_id for e in by_recipient.events) == sorted(ids)
    assert all(e.recipient == target for e in by_recipient.events)

    pages, token = [], ""
    while True:
        page = await events.ListEvents(
            event_service_pb2.ListEventsRequest(page_size=5, page_token=token), metadata=tenant.metadata
        )
        pages.append(list(page.events))
        token = page.next_page_token
        if not token:
            break
    flat = [e.id for p in pages for e in p]
    assert len(flat) == 12 and len(set(flat)) == 12
    assert [len(p) for p in pages] == [5, 5, 2]

    future = timestamp_pb2.Timestamp()
    future.FromSeconds(int(time.time()) + 3600)
    none_yet = await events.ListEvents(
        event_service_pb2.ListEventsRequest(start_time=future), metadata=tenant.metadata
    )
    assert list(none_yet.events) == []

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await events.ListEvents(
            event_service_pb2.ListEventsRequest(page_token="garbage!"), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(caught.value) == ["page_token"]


async def test_another_tenant_sees_nothing_of_a_message(suite, edge, tenant) -> None:
    answer = await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(mail(), metadata=tenant.metadata)
    await wait_for_events(edge, tenant.metadata, answer.message_id, [ACCEPTED, DELIVERED])
    other = await create_tenant(suite)
    assert await events_of(edge, other.metadata, answer.message_id) == []
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    responses = []
    for message_id in (answer.message_id, str(uuid.uuid4())):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetMessage(
                mail_service_pb2.GetMessageRequest(message_id=message_id), metadata=other.metadata
            )
        responses.append((caught.value.code(), (caught.value.details() or "").replace(message_id, "<id>")))
    # Another tenant's id and a nonexistent id answer identically: no existence oracle.
    assert responses[0] == responses[1] == (grpc.StatusCode.NOT_FOUND, "message '<id>' not found")

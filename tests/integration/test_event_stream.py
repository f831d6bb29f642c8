"""StreamEvents cursors: a resumed stream misses and repeats nothing, bad cursors are refused,
every EventType is a valid filter; the connection recycling a client must survive."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from google.protobuf import timestamp_pb2
from postwire.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc, mail_service_pb2_grpc

from libs.embedded.ports import free_port
from libs.embedded.process import ManagedProcess
from libs.embedded.suite import Suite
from tests.conftest import create_tenant
from tests.integration.helpers import bad_request_fields, mail, wait_for_events

ACCEPTED, DELIVERED = event_pb2.EVENT_TYPE_ACCEPTED, event_pb2.EVENT_TYPE_DELIVERED
NEW_TYPES = [
    event_pb2.EVENT_TYPE_COMPLAINED,
    event_pb2.EVENT_TYPE_WEBHOOK_DISABLED,
    event_pb2.EVENT_TYPE_OPENED,
    event_pb2.EVENT_TYPE_CLICKED,
    event_pb2.EVENT_TYPE_UNSUBSCRIBED,
]


def _since_a_second_ago() -> timestamp_pb2.Timestamp:
    start = timestamp_pb2.Timestamp()
    start.FromSeconds(int(time.time()) - 1)
    return start


async def _all_events(channel: grpc.aio.Channel, metadata: object) -> list[event_pb2.Event]:
    answer = await event_service_pb2_grpc.EventServiceStub(channel).ListEvents(
        event_service_pb2.ListEventsRequest(page_size=1000), metadata=metadata
    )
    return list(answer.events)


async def _send_and_settle(channel: grpc.aio.Channel, metadata: object, count: int) -> list[str]:
    stub = mail_service_pb2_grpc.MailServiceStub(channel)
    ids = [(await stub.SendEmail(mail(), metadata=metadata)).message_id for _ in range(count)]
    for message_id in ids:
        await wait_for_events(channel, metadata, message_id, [ACCEPTED, DELIVERED])
    return ids


async def _first_error(call: grpc.aio.UnaryStreamCall) -> grpc.aio.AioRpcError:
    """The error a stream ends with before sending anything (a bad request fails at once)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(call.read(), timeout=10)
    return caught.value


async def test_a_stream_resumed_from_a_cursor_misses_and_repeats_nothing(edge, tenant) -> None:
    events = event_service_pb2_grpc.EventServiceStub(edge)
    first = events.StreamEvents(
        event_service_pb2.StreamEventsRequest(start_time=_since_a_second_ago()), metadata=tenant.metadata
    )
    await _send_and_settle(edge, tenant.metadata, 1)
    opening = await asyncio.wait_for(first.read(), timeout=10)
    first.cancel()
    assert opening.cursor, "every response carries a cursor"
    # Sent while no stream is open: the resumed stream must replay these from storage.
    await _send_and_settle(edge, tenant.metadata, 3)
    stored = await _all_events(edge, tenant.metadata)
    assert stored[0].id == opening.event.id

    resumed = events.StreamEvents(
        event_service_pb2.StreamEventsRequest(cursor=opening.cursor), metadata=tenant.metadata
    )
    seen = [(await asyncio.wait_for(resumed.read(), timeout=10)).event.id for _ in stored[1:]]
    # Nothing more is due: a duplicate would arrive now.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(resumed.read(), timeout=1.5)
    resumed.cancel()
    assert seen == [event.id for event in stored[1:]]


async def test_a_resumed_stream_goes_on_to_tail_new_events(edge, tenant) -> None:
    events = event_service_pb2_grpc.EventServiceStub(edge)
    await _send_and_settle(edge, tenant.metadata, 1)
    first = events.StreamEvents(
        event_service_pb2.StreamEventsRequest(types=[DELIVERED], start_time=_since_a_second_ago()),
        metadata=tenant.metadata,
    )
    opening = await asyncio.wait_for(first.read(), timeout=10)
    first.cancel()
    resumed = events.StreamEvents(
        event_service_pb2.StreamEventsRequest(types=[DELIVERED], cursor=opening.cursor),
        metadata=tenant.metadata,
    )
    # The resumed stream is caught up (nothing stored after the cursor matches); what it gets
    # next is the live tail.
    (later,) = await _send_and_settle(edge, tenant.metadata, 1)
    live = await asyncio.wait_for(resumed.read(), timeout=15)
    resumed.cancel()
    assert (live.event.message_id, live.event.type) == (later, DELIVERED)
    assert live.cursor and live.cursor != opening.cursor


async def test_a_bad_cursor_is_invalid_argument_on_cursor(suite, edge, tenant) -> None:
    events = event_service_pb2_grpc.EventServiceStub(edge)
    first = events.StreamEvents(
        event_service_pb2.StreamEventsRequest(types=[ACCEPTED], start_time=_since_a_second_ago()),
        metadata=tenant.metadata,
    )
    await _send_and_settle(edge, tenant.metadata, 1)
    cursor = (await asyncio.wait_for(first.read(), timeout=10)).cursor
    first.cancel()
    other = await create_tenant(suite)
    altered = cursor[:-4] + ("AAAA" if not cursor.endswith("AAAA") else "BBBB")
    cases = {
        "altered": (event_service_pb2.StreamEventsRequest(types=[ACCEPTED], cursor=altered), tenant),
        "another tenant's": (event_service_pb2.StreamEventsRequest(types=[ACCEPTED], cursor=cursor), other),
        "other filters": (event_service_pb2.StreamEventsRequest(types=[DELIVERED], cursor=cursor), tenant),
        "with start_time": (
            event_service_pb2.StreamEventsRequest(
                types=[ACCEPTED], cursor=cursor, start_time=_since_a_second_ago()
            ),
            tenant,
        ),
        "not a cursor": (event_service_pb2.StreamEventsRequest(types=[ACCEPTED], cursor="12"), tenant),
    }
    for name, (request, caller) in cases.items():
        error = await _first_error(events.StreamEvents(request, metadata=caller.metadata))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, error.code(), error.details())
        assert bad_request_fields(error) == ["cursor"], name


async def test_every_event_type_is_a_filter_and_unknown_ones_are_refused(edge, tenant) -> None:
    events = event_service_pb2_grpc.EventServiceStub(edge)
    await _send_and_settle(edge, tenant.metadata, 1)
    listed = await events.ListEvents(
        event_service_pb2.ListEventsRequest(types=NEW_TYPES), metadata=tenant.metadata
    )
    assert list(listed.events) == []
    stream = events.StreamEvents(
        event_service_pb2.StreamEventsRequest(types=NEW_TYPES, start_time=_since_a_second_ago()),
        metadata=tenant.metadata,
    )
    # Accepted (no error) and nothing matches.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(stream.read(), timeout=1.5)
    stream.cancel()

    for bad in ([99], [event_pb2.EVENT_TYPE_UNSPECIFIED]):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await events.ListEvents(event_service_pb2.ListEventsRequest(types=bad), metadata=tenant.metadata)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_fields(caught.value) == ["types"]
        error = await _first_error(
            events.StreamEvents(event_service_pb2.StreamEventsRequest(types=bad), metadata=tenant.metadata)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_fields(error) == ["types"]


# --- connection recycling --------------------------------------------------------------------

RECYCLE_SECONDS = 3


@pytest.fixture(scope="module")
def recycling_edge(suite: Suite) -> Iterator[str]:
    """A second public edge in front of the same services whose connections live 3 s (+1 s grace):
    what every client of the real one (5 min) goes through, compressed."""
    listen = f"127.0.0.1:{free_port()}"
    env = suite.service_env("edge")
    env.update(
        POSTWIRE_LISTEN=listen,
        POSTWIRE_GRPC_MAX_CONNECTION_AGE_SECONDS=str(RECYCLE_SECONDS),
        POSTWIRE_GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS="1",
    )
    proc = ManagedProcess(
        "edge-recycling",
        [sys.executable, "-m", "services.edge"],
        env=env,
        log_path=suite.data_dir / "logs" / "edge-recycling.log",
    )
    proc.spawn()
    proc.wait_ready(r"serving on", timeout=60)
    try:
        yield listen
    finally:
        proc.stop(timeout=30)


@pytest.fixture
async def recycled(recycling_edge: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(recycling_edge) as channel:
        yield channel


async def test_a_client_resuming_with_its_last_cursor_sees_every_event_once_across_recycles(
    edge, recycled, tenant
) -> None:
    events = event_service_pb2_grpc.EventServiceStub(recycled)
    sending_for = 3 * RECYCLE_SECONDS + 1
    sent: list[str] = []

    async def send_continuously() -> None:
        stub = mail_service_pb2_grpc.MailServiceStub(edge)
        deadline = time.monotonic() + sending_for
        while time.monotonic() < deadline:
            sent.append((await stub.SendEmail(mail(), metadata=tenant.metadata)).message_id)
            await asyncio.sleep(0.2)

    seen: list[event_pb2.Event] = []
    cuts: list[grpc.StatusCode] = []
    cursor = ""
    start = _since_a_second_ago()
    sender = asyncio.create_task(send_continuously())
    expected: list[str] | None = None
    give_up = time.monotonic() + sending_for + 60
    while time.monotonic() < give_up:
        request = (
            event_service_pb2.StreamEventsRequest(cursor=cursor)
            if cursor
            else (event_service_pb2.StreamEventsRequest(start_time=start))
        )
        call = events.StreamEvents(request, metadata=tenant.metadata)
        try:
            while True:
                if expected is not None and len(seen) >= len(expected):
                    break
                try:
                    item = await asyncio.wait_for(call.read(), timeout=2)
                except TimeoutError:
                    if sender.done() and expected is None:
                        await sender
                        for message_id in sent:
                            await wait_for_events(edge, tenant.metadata, message_id, [ACCEPTED, DELIVERED])
                        expected = [e.id for e in await _all_events(edge, tenant.metadata)]
                    continue
                if item is grpc.aio.EOF:
                    cuts.append(grpc.StatusCode.OK)
                    break
                seen.append(item.event)
                cursor = item.cursor
        except grpc.aio.AioRpcError as exc:
            cuts.append(exc.code())
            continue
        finally:
            call.cancel()
        if expected is not None and len(seen) >= len(expected):
            break
    assert expected is not None, "the stream never caught up"
    assert len(cuts) >= 2, f"expected at least two recycles while sending, saw {cuts}"
    assert len(sent) >= 5
    # Every event of those messages exactly once, in storage order, through every reconnect.
    assert [e.id for e in seen] == expected
    assert {e.message_id for e in seen} == set(sent)

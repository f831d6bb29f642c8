"""The events service stores a burst of events in batches: each event exactly once however
often it is delivered, its outbox row retired, its webhook delivery and suppression queued once.

Events go onto the bus the way producers and the outbox sweeper put them there (the sweeper's
re-publish carries a fresh `<id>:<stamp>` dedupe id, so JetStream delivers every copy).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import nats
import pytest
from google.protobuf import timestamp_pb2
from postwire.internal.v1 import bus_pb2
from postwire.v1 import (
    event_pb2,
    event_service_pb2,
    event_service_pb2_grpc,
    message_pb2,
    webhook_service_pb2,
    webhook_service_pb2_grpc,
)

from libs import event_outbox
from libs.bus import event_subject
from libs.testing.polling import poll_until
from libs.testing.webhook_receiver import WebhookReceiver
from tests.conftest import create_tenant

BOUNCED = event_pb2.EVENT_TYPE_BOUNCED
COPIES = 3
EVENTS = 40


@pytest.fixture
async def pool(suite) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(suite.database_url, min_size=1, max_size=2)
    assert pool is not None
    yield pool
    await pool.close()


def bounce(tenant_id: str, index: int) -> bus_pb2.EventEnvelope:
    message_id = str(uuid.uuid4())
    envelope = bus_pb2.EventEnvelope(
        tenant_id=tenant_id,
        event=event_pb2.Event(
            id=f"{message_id}:0:{index}:bounced",
            type=event_pb2.EVENT_TYPE_BOUNCED,
            message_id=message_id,
            recipient=f"gone-{index}-{uuid.uuid4().hex[:6]}@example.org",
            smtp_reply=message_pb2.SmtpReply(code=550, enhanced_code="5.1.1", text="5.1.1 User unknown"),
            bounce_category=message_pb2.BOUNCE_CATEGORY_HARD,
        ),
    )
    envelope.event.create_time.GetCurrentTime()
    return envelope


async def test_redelivered_events_are_stored_once_each_and_leave_the_outbox(
    suite, edge, tenant, pool
) -> None:
    receiver = WebhookReceiver().start()
    try:
        path = f"/hook/{uuid.uuid4().hex[:8]}"
        await webhook_service_pb2_grpc.WebhookServiceStub(edge).CreateWebhook(
            webhook_service_pb2.CreateWebhookRequest(
                webhook=webhook_service_pb2.Webhook(url=receiver.url(path), event_types=[BOUNCED])
            ),
            metadata=tenant.metadata,
        )
        envelopes = [bounce(tenant.id, n) for n in range(EVENTS)]
        ids = [e.event.id for e in envelopes]
        async with pool.acquire() as conn:
            await event_outbox.insert_events(conn, envelopes)
        await publish_copies(suite.nats_url, tenant.id, envelopes)

        async def all_retired() -> bool:
            left = await pool.fetchval("SELECT count(*) FROM event_outbox WHERE event_id = ANY($1::text[])", ids)
            return left == 0

        await poll_until(all_retired, timeout=30, what="every outbox row retired by the events service")
        stored = await pool.fetch(
            "SELECT event_id, count(*) AS n FROM events WHERE tenant_id = $1::uuid GROUP BY event_id", tenant.id
        )
        assert {r["event_id"]: r["n"] for r in stored} == dict.fromkeys(ids, 1)
        # One webhook delivery per event, however many copies arrived.
        requests = await receiver.wait_for(EVENTS, path=path, timeout=30)
        assert sorted(json.loads(r.body)["data"]["id"] for r in requests) == sorted(ids)
    finally:
        receiver.close()


async def publish_copies(nats_url: str, tenant_id: str, envelopes: list[bus_pb2.EventEnvelope]) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        subject = event_subject(tenant_id, "bounced")
        await asyncio.gather(
            *(
                js.publish(subject, e.SerializeToString(), headers={"Nats-Msg-Id": f"{e.event.id}:{copy}"})
                for copy in range(1, COPIES + 1)
                for e in envelopes
            )
        )
    finally:
        await nc.close()


async def test_live_streams_of_two_tenants_see_every_event_of_a_shared_batch(suite, edge, tenant) -> None:
    # The recorder announces once per tenant per stored batch: each tenant's stream must still
    # get every event of a burst that lands in batches mixed with another tenant's events.
    other = await create_tenant(suite)
    events = event_service_pb2_grpc.EventServiceStub(edge)
    start = timestamp_pb2.Timestamp()
    start.FromSeconds(int(time.time()) - 1)
    streams = {}
    for owner in (tenant, other):
        first = bounce(owner.id, 0)
        await publish_copies(suite.nats_url, owner.id, [first])
        call = events.StreamEvents(
            event_service_pb2.StreamEventsRequest(start_time=start), metadata=owner.metadata
        )
        # The first event read: the stream is subscribed and tailing.
        assert (await asyncio.wait_for(call.read(), timeout=15)).event.id == first.event.id
        streams[owner.id] = call
    bursts = {owner.id: [bounce(owner.id, n) for n in range(1, EVENTS + 1)] for owner in (tenant, other)}
    await asyncio.gather(*(publish_copies(suite.nats_url, t, envelopes) for t, envelopes in bursts.items()))
    try:
        for tenant_id, call in streams.items():
            seen = [(await asyncio.wait_for(call.read(), timeout=15)).event.id for _ in range(EVENTS)]
            assert sorted(seen) == sorted(e.event.id for e in bursts[tenant_id])
    finally:
        for call in streams.values():
            call.cancel()


def _event(
    tenant_id: str, kind: int, *, stream: str = "", tags: tuple[str, ...] = ()
) -> bus_pb2.EventEnvelope:
    # A message-less event (WEBHOOK_DISABLED) concerns the whole tenant.
    message_id = "" if kind == event_pb2.EVENT_TYPE_WEBHOOK_DISABLED else str(uuid.uuid4())
    envelope = bus_pb2.EventEnvelope(
        tenant_id=tenant_id,
        event=event_pb2.Event(
            id=f"{uuid.uuid4()}:{kind}", type=kind, message_id=message_id, stream=stream, tags=list(tags)
        ),
    )
    envelope.event.create_time.GetCurrentTime()
    return envelope


async def test_each_webhook_gets_deliveries_for_the_events_its_filters_select(
    suite, edge, tenant, pool
) -> None:
    delivered, disabled = event_pb2.EVENT_TYPE_DELIVERED, event_pb2.EVENT_TYPE_WEBHOOK_DISABLED
    receiver = WebhookReceiver().start()
    try:
        stub = webhook_service_pb2_grpc.WebhookServiceStub(edge)
        specs = {
            "all": webhook_service_pb2.Webhook(event_types=[delivered, disabled]),
            "billing": webhook_service_pb2.Webhook(event_types=[delivered, disabled], streams=["billing"]),
            "tagged": webhook_service_pb2.Webhook(event_types=[delivered, disabled], tags=["b", "z"]),
            "bounces": webhook_service_pb2.Webhook(event_types=[BOUNCED]),
        }
        hooks = {}
        for name, spec in specs.items():
            spec.url = receiver.url(f"/{name}-{uuid.uuid4().hex[:6]}")
            created = await stub.CreateWebhook(
                webhook_service_pb2.CreateWebhookRequest(webhook=spec), metadata=tenant.metadata
            )
            hooks[created.webhook.id] = name
        events = {
            "billing a b": _event(tenant.id, delivered, stream="billing", tags=("a", "b")),
            "marketing a": _event(tenant.id, delivered, stream="marketing", tags=("a",)),
            "marketing z": _event(tenant.id, delivered, stream="marketing", tags=("z",)),
            "tenant-level": _event(tenant.id, disabled),
        }
        await publish_copies(suite.nats_url, tenant.id, list(events.values()))
        ids = [e.event.id for e in events.values()]

        async def stored() -> bool:
            count = await pool.fetchval("SELECT count(*) FROM events WHERE event_id = ANY($1::text[])", ids)
            return count == len(ids)

        await poll_until(stored, timeout=30, what="the events stored")
        # Queued in the statement that stored the events: they are there as soon as the events are.
        rows = await pool.fetch(
            "SELECT webhook_id::text, event_id FROM webhook_deliveries WHERE event_id = ANY($1::text[])", ids
        )
        name_of = {e.event.id: name for name, e in events.items()}
        got = {(hooks[r["webhook_id"]], name_of[r["event_id"]]) for r in rows}
        assert len(rows) == len(got)
        assert got == {
            ("all", "billing a b"),
            ("all", "marketing a"),
            ("all", "marketing z"),
            ("all", "tenant-level"),
            ("billing", "billing a b"),
            ("billing", "tenant-level"),
            ("tagged", "billing a b"),
            ("tagged", "marketing z"),
            ("tagged", "tenant-level"),
        }
    finally:
        receiver.close()

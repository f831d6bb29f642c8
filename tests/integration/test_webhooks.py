"""WebhookService through the edge, against a real HTTP receiver on loopback: signed deliveries
that verify with the `standardwebhooks` library, retries with a stable webhook-id, time-outs,
redirects, 410, refused destinations, secret rotation, and secrets never shown twice."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from postwire.v1 import (
    event_pb2,
    event_service_pb2,
    event_service_pb2_grpc,
    mail_service_pb2_grpc,
    webhook_service_pb2_grpc,
)
from postwire.v1 import webhook_service_pb2 as pb
from standardwebhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from libs.testing.polling import poll_until
from libs.testing.webhook_receiver import Reply, WebhookReceiver
from tests.conftest import create_tenant
from tests.integration.helpers import bad_request_fields, mail, wait_for_events

DELIVERED = event_pb2.EVENT_TYPE_DELIVERED
PENDING = pb.WEBHOOK_DELIVERY_STATE_PENDING
OK = pb.WEBHOOK_DELIVERY_STATE_DELIVERED
DEAD = pb.WEBHOOK_DELIVERY_STATE_DEAD_LETTERED


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def _hooks(edge: grpc.aio.Channel) -> webhook_service_pb2_grpc.WebhookServiceStub:
    return webhook_service_pb2_grpc.WebhookServiceStub(edge)


async def _create(edge, tenant, url: str, *types: int) -> pb.CreateWebhookResponse:
    request = pb.CreateWebhookRequest(webhook=pb.Webhook(url=url, event_types=list(types or [DELIVERED])))
    return await _hooks(edge).CreateWebhook(request, metadata=tenant.metadata)


async def _send(edge, tenant) -> str:
    answer = await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(mail(), metadata=tenant.metadata)
    return answer.message_id


async def _requests(receiver: WebhookReceiver, path: str, count: int, timeout: float = 30):
    async def probe():
        found = receiver.requests(path)
        return found if len(found) >= count else []

    return await poll_until(probe, timeout=timeout, what=f"{count} request(s) at {path}")


def _verify(secret: str, request) -> dict:
    return Verifier(secret).verify(request.body, dict(request.headers))


async def _delivery(edge, tenant, webhook_id: str, state: int, timeout: float = 30) -> pb.WebhookDelivery:
    async def probe():
        answer = await _hooks(edge).ListWebhookDeliveries(
            pb.ListWebhookDeliveriesRequest(webhook_id=webhook_id, state=state), metadata=tenant.metadata
        )
        return list(answer.deliveries)

    (delivery,) = await poll_until(probe, timeout=timeout, what=f"a delivery in state {state}")
    return delivery


def _path() -> str:
    return f"/hook/{uuid.uuid4().hex[:8]}"


async def test_a_delivered_event_arrives_signed_and_verifies(edge, tenant, receiver) -> None:
    path = _path()
    created = await _create(edge, tenant, receiver.url(path))
    assert created.secret.startswith("whsec_")
    message_id = await _send(edge, tenant)

    (request,) = await _requests(receiver, path, 1)
    assert request.headers["content-type"] == "application/json"
    payload = _verify(created.secret, request)
    assert payload["type"] == "email.delivered"
    assert payload["data"]["messageId"] == message_id
    assert payload["data"]["type"] == "EVENT_TYPE_DELIVERED"
    assert request.headers["webhook-id"] == payload["data"]["id"]
    delivery = await _delivery(edge, tenant, created.webhook.id, OK)
    assert (delivery.event_id, delivery.attempts, delivery.last_status) == (payload["data"]["id"], 1, 200)
    # Only the subscribed type: the message's ACCEPTED event was not sent.
    assert len(receiver.requests(path)) == 1


async def test_503_then_200_is_retried_with_the_same_webhook_id(edge, tenant, receiver) -> None:
    path = _path()
    receiver.script(path, Reply(503, body=b"busy"))
    created = await _create(edge, tenant, receiver.url(path))
    await _send(edge, tenant)

    first, second = await _requests(receiver, path, 2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    _verify(created.secret, second)
    delivery = await _delivery(edge, tenant, created.webhook.id, OK)
    assert (delivery.attempts, delivery.last_status) == (2, 200)


async def test_a_redirect_is_a_failure_and_is_not_followed(edge, tenant, receiver) -> None:
    path, elsewhere = _path(), _path()
    receiver.script(path, Reply(302, headers={"Location": receiver.url(elsewhere)}))
    created = await _create(edge, tenant, receiver.url(path))
    await _send(edge, tenant)

    await _requests(receiver, path, 2)
    delivery = await _delivery(edge, tenant, created.webhook.id, OK)
    assert delivery.attempts == 2
    assert receiver.requests(elsewhere) == []


async def test_time_outs_dead_letter_and_redelivery_sends_the_same_id(edge, tenant, receiver) -> None:
    path = _path()
    # Longer than the suite's 2 s time-out, on each of the 4 attempts.
    receiver.script(path, *[Reply(200, delay=4)] * 4)
    created = await _create(edge, tenant, receiver.url(path))
    await _send(edge, tenant)

    dead = await _delivery(edge, tenant, created.webhook.id, DEAD, timeout=60)
    assert dead.attempts == 4 and dead.last_status == 0
    assert "timed out" in dead.last_response
    assert not dead.HasField("next_attempt_time")

    again = await _hooks(edge).RedeliverWebhookEvent(
        pb.RedeliverWebhookEventRequest(webhook_id=created.webhook.id, event_id=dead.event_id),
        metadata=tenant.metadata,
    )
    assert again.delivery.state == PENDING
    await _delivery(edge, tenant, created.webhook.id, OK)
    assert {r.headers["webhook-id"] for r in receiver.requests(path)} == {dead.event_id}
    assert len(receiver.requests(path)) == 5


async def test_410_disables_the_webhook_with_a_tenant_event(edge, tenant, receiver) -> None:
    gone, watcher = _path(), _path()
    receiver.script(gone, Reply(410))
    created = await _create(edge, tenant, receiver.url(gone))
    # A second webhook of the tenant hears about the first one's disabling.
    watching = await _create(edge, tenant, receiver.url(watcher), event_pb2.EVENT_TYPE_WEBHOOK_DISABLED)
    await _send(edge, tenant)

    dead = await _delivery(edge, tenant, created.webhook.id, DEAD)
    assert (dead.attempts, dead.last_status) == (1, 410)
    hook = (
        await _hooks(edge).GetWebhook(pb.GetWebhookRequest(id=created.webhook.id), metadata=tenant.metadata)
    ).webhook
    assert not hook.enabled and "410" in hook.disabled_reason

    async def disabled_events():
        answer = await event_service_pb2_grpc.EventServiceStub(edge).ListEvents(
            event_service_pb2.ListEventsRequest(types=[event_pb2.EVENT_TYPE_WEBHOOK_DISABLED]),
            metadata=tenant.metadata,
        )
        return list(answer.events)

    (event,) = await poll_until(disabled_events, timeout=30, what="a WEBHOOK_DISABLED event")
    assert event.webhook_id == created.webhook.id and event.message_id == "" and "410" in event.reason
    (request,) = await _requests(receiver, watcher, 1)
    payload = _verify(watching.secret, request)
    assert payload["type"] == "webhook.disabled"
    assert payload["data"]["webhookId"] == created.webhook.id
    assert len(receiver.requests(gone)) == 1


async def test_private_and_malformed_destinations_are_refused_at_create(edge, tenant, dns) -> None:
    dns.set("A", "hooks.internal.example", "10.1.2.3")
    for url in (
        "http://10.0.0.7/hook",
        "http://hooks.internal.example/hook",
        "http://169.254.169.254/latest",
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _create(edge, tenant, url)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, url
        assert bad_request_fields(caught.value) == ["webhook.url"], url
    bad = pb.Webhook(
        url="ftp://127.0.0.1/x", event_types=[event_pb2.EVENT_TYPE_OPENED], streams=["Bad Stream"]
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _hooks(edge).CreateWebhook(pb.CreateWebhookRequest(webhook=bad), metadata=tenant.metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(caught.value) == ["webhook.url", "webhook.event_types[0]", "webhook.streams[0]"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _hooks(edge).CreateWebhook(
            pb.CreateWebhookRequest(webhook=pb.Webhook(url="http://127.0.0.1:9/x")), metadata=tenant.metadata
        )
    assert bad_request_fields(caught.value) == ["webhook.event_types"]


async def test_update_to_a_private_address_is_refused(edge, tenant, receiver) -> None:
    created = await _create(edge, tenant, receiver.url(_path()))
    change = pb.UpdateWebhookRequest(
        webhook=pb.Webhook(id=created.webhook.id, url="http://10.9.9.9/"),
        update_mask=field_mask_pb2.FieldMask(paths=["url"]),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _hooks(edge).UpdateWebhook(change, metadata=tenant.metadata)
    assert bad_request_fields(caught.value) == ["webhook.url"]


async def test_during_a_rotation_both_secrets_verify_the_same_request(edge, tenant, receiver) -> None:
    path = _path()
    created = await _create(edge, tenant, receiver.url(path))
    rotated = await _hooks(edge).RotateWebhookSecret(
        pb.RotateWebhookSecretRequest(id=created.webhook.id), metadata=tenant.metadata
    )
    assert rotated.secret.startswith("whsec_") and rotated.secret != created.secret
    assert rotated.previous_expire_time.seconds > 0
    await _send(edge, tenant)

    (request,) = await _requests(receiver, path, 1)
    assert len(request.headers["webhook-signature"].split()) == 2
    _verify(created.secret, request)
    _verify(rotated.secret, request)

    # Zero overlap: the old secret stops at once.
    newest = await _hooks(edge).RotateWebhookSecret(
        pb.RotateWebhookSecretRequest(id=created.webhook.id, overlap=duration_pb2.Duration()),
        metadata=tenant.metadata,
    )
    await _send(edge, tenant)
    _, second = await _requests(receiver, path, 2)
    _verify(newest.secret, second)
    with pytest.raises(WebhookVerificationError):
        _verify(rotated.secret, second)


async def test_secrets_are_never_in_get_or_list_and_other_tenants_get_not_found(
    suite, edge, tenant, receiver
) -> None:
    created = await _create(edge, tenant, receiver.url(_path()))
    got = await _hooks(edge).GetWebhook(pb.GetWebhookRequest(id=created.webhook.id), metadata=tenant.metadata)
    listed = await _hooks(edge).ListWebhooks(pb.ListWebhooksRequest(), metadata=tenant.metadata)
    assert got.webhook == created.webhook
    assert [w.id for w in listed.webhooks] == [created.webhook.id]
    raw = created.secret.removeprefix("whsec_")
    for answer in (got, listed):
        assert raw.encode() not in answer.SerializeToString()
        assert raw not in json.dumps(str(answer))

    other = (await create_tenant(suite)).metadata
    for call in (
        _hooks(edge).GetWebhook(pb.GetWebhookRequest(id=created.webhook.id), metadata=other),
        _hooks(edge).DeleteWebhook(pb.DeleteWebhookRequest(id=created.webhook.id), metadata=other),
        _hooks(edge).ListWebhookDeliveries(
            pb.ListWebhookDeliveriesRequest(webhook_id=created.webhook.id), metadata=other
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_post_is_a_client_span_in_the_messages_trace(edge, tenant, receiver, otlp) -> None:
    path = _path()
    created = await _create(edge, tenant, receiver.url(path))
    await _send(edge, tenant)
    (request,) = await _requests(receiver, path, 1)

    def spans_named(service: str, name: str, **attributes: str) -> list:
        return [
            s
            for s in otlp.spans()
            if s.service == service
            and s.name == name
            and all(s.attributes.get(k) == v for k, v in attributes.items())
        ]

    async def post_and_send():
        posts = spans_named("postwire-events", "POST", **{"postwire.webhook.id": created.webhook.id})
        sends = [
            s
            for s in otlp.spans()
            # This test's tenant made one send: the SendEmail span in submission carries its id.
            if s.service == "postwire-submission" and s.attributes.get("postwire.tenant_id") == tenant.id
        ]
        return (posts, sends) if posts and sends else None

    posts, sends = await poll_until(
        post_and_send, timeout=30, what="the webhook POST span and the send's spans"
    )
    (post,) = posts
    assert post.kind == 3  # SPAN_KIND_CLIENT
    assert post.parent_span_id
    assert post.trace_id in {s.trace_id for s in sends}
    assert request.headers["webhook-id"] == post.attributes["postwire.event.id"]


async def test_a_name_that_later_resolves_to_a_private_address_is_refused_at_delivery(
    edge, tenant, receiver, dns
) -> None:
    name = f"hook-{uuid.uuid4().hex[:8]}.example"
    dns.set("A", name, "127.0.0.1")
    path = _path()
    created = await _create(edge, tenant, f"http://{name}:{receiver.port}{path}")
    # The name moves to a private address after the check at create (DNS rebinding).
    dns.set("A", name, "10.20.30.40")
    await _send(edge, tenant)

    async def refused():
        answer = await _hooks(edge).ListWebhookDeliveries(
            pb.ListWebhookDeliveriesRequest(webhook_id=created.webhook.id), metadata=tenant.metadata
        )
        return [d for d in answer.deliveries if d.attempts >= 1]

    (delivery,) = await poll_until(refused, timeout=30, what="a refused attempt")
    assert (
        delivery.last_status == 0
        and "resolves to an address Postwire does not connect to" in delivery.last_response
    )
    assert receiver.requests(path) == []


async def test_list_webhooks_pages_oldest_first_with_sealed_tokens(edge, tenant, receiver) -> None:
    made = [(await _create(edge, tenant, receiver.url(_path()))).webhook.id for _ in range(3)]
    first = await _hooks(edge).ListWebhooks(pb.ListWebhooksRequest(page_size=2), metadata=tenant.metadata)
    assert [w.id for w in first.webhooks] == made[:2] and first.next_page_token
    second = await _hooks(edge).ListWebhooks(
        pb.ListWebhooksRequest(page_size=2, page_token=first.next_page_token), metadata=tenant.metadata
    )
    assert [w.id for w in second.webhooks] == made[2:] and not second.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _hooks(edge).ListWebhooks(pb.ListWebhooksRequest(page_token="forged"), metadata=tenant.metadata)
    assert bad_request_fields(caught.value) == ["page_token"]


@pytest.fixture
def quick_disable(suite) -> Iterator[None]:
    """The events service restarted with a 2 s disabling clock; put back afterwards."""
    original = dict(suite.extra_env)

    def restart(env: dict[str, str]) -> None:
        suite.processes["events"].stop(timeout=30)
        suite.extra_env = env
        suite.start_service("events")

    restart({**original, "POSTWIRE_WEBHOOK_DISABLE_AFTER_SECONDS": "2"})
    yield
    restart(original)


async def test_an_endpoint_failing_continuously_is_disabled_with_a_tenant_event(
    quick_disable, edge, tenant, receiver
) -> None:
    path = _path()
    receiver.script(path, *[Reply(500, body=b"down")] * 50)
    created = await _create(edge, tenant, receiver.url(path))
    await _send(edge, tenant)

    async def disabled() -> pb.Webhook | None:
        hook = (
            await _hooks(edge).GetWebhook(
                pb.GetWebhookRequest(id=created.webhook.id), metadata=tenant.metadata
            )
        ).webhook
        return None if hook.enabled else hook

    hook = await poll_until(disabled, timeout=30, what="the failing webhook to be disabled")
    assert "failed every attempt for 2 seconds" in hook.disabled_reason
    attempts = receiver.requests(path)
    assert len(attempts) >= 2 and len({a.headers["webhook-id"] for a in attempts}) == 1

    async def disabled_events() -> list[event_pb2.Event]:
        answer = await event_service_pb2_grpc.EventServiceStub(edge).ListEvents(
            event_service_pb2.ListEventsRequest(types=[event_pb2.EVENT_TYPE_WEBHOOK_DISABLED]),
            metadata=tenant.metadata,
        )
        return [e for e in answer.events if e.webhook_id == created.webhook.id]

    (event,) = await poll_until(disabled_events, timeout=30, what="a WEBHOOK_DISABLED event")
    assert "failed every attempt" in event.reason
    # Nothing more is sent to a disabled endpoint.
    await _delivery(edge, tenant, created.webhook.id, DEAD)
    seen = len(receiver.requests(path))
    later = await _send(edge, tenant)
    await wait_for_events(edge, tenant.metadata, later, [DELIVERED])
    assert len(receiver.requests(path)) == seen


async def test_many_messages_at_once_each_arrive_once_signed_and_are_logged_delivered(
    edge, tenant, receiver
) -> None:
    # Deliveries finish together and are recorded in one statement, over kept-alive connections:
    # each event still arrives exactly once with a valid signature and its own log entry.
    path = _path()
    created = await _create(edge, tenant, receiver.url(path))
    count = 24
    message_ids = set(await asyncio.gather(*(_send(edge, tenant) for _ in range(count))))
    requests = await _requests(receiver, path, count, timeout=60)
    payloads = [_verify(created.secret, r) for r in requests]
    assert sorted(r.headers["webhook-id"] for r in requests) == sorted(p["data"]["id"] for p in payloads)
    assert {p["data"]["messageId"] for p in payloads} == message_ids
    assert len({r.headers["webhook-id"] for r in requests}) == count

    async def logged():
        answer = await _hooks(edge).ListWebhookDeliveries(
            pb.ListWebhookDeliveriesRequest(webhook_id=created.webhook.id, state=OK, page_size=100),
            metadata=tenant.metadata,
        )
        return list(answer.deliveries) if len(answer.deliveries) >= count else []

    deliveries = await poll_until(logged, timeout=30, what=f"{count} delivered log entries")
    assert sorted(d.event_id for d in deliveries) == sorted(p["data"]["id"] for p in payloads)
    assert {(d.attempts, d.last_status) for d in deliveries} == {(1, 200)}
    assert receiver.connections < count  # connections are kept alive between deliveries

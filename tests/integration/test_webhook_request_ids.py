"""CreateWebhook's request_id (AIP-155) through the edge: a retry gets the first response (the
same webhook and the same signing secret) and creates nothing, the same id with another request is
ALREADY_EXISTS naming request_id, a malformed id is INVALID_ARGUMENT on request_id, and the
remembered response (it carries the secret) is not stored in the clear."""

from __future__ import annotations

import uuid

import asyncpg
import grpc
import pytest
from postwire.v1 import event_pb2, webhook_service_pb2_grpc
from postwire.v1 import webhook_service_pb2 as pb

from libs.embedded.suite import Suite
from tests.conftest import Tenant, create_tenant
from tests.integration.helpers import bad_request_fields

DELIVERED = event_pb2.EVENT_TYPE_DELIVERED
BOUNCED = event_pb2.EVENT_TYPE_BOUNCED


def _request(
    request_id: str, *types: event_pb2.EventType.ValueType, url: str = "http://127.0.0.1:9/hook"
) -> pb.CreateWebhookRequest:
    return pb.CreateWebhookRequest(
        webhook=pb.Webhook(url=url, event_types=list(types) or [DELIVERED]), request_id=request_id
    )


async def _all_webhooks(hooks: webhook_service_pb2_grpc.WebhookServiceAsyncStub, tenant: Tenant) -> list[str]:
    answer = await hooks.ListWebhooks(pb.ListWebhooksRequest(page_size=100), metadata=tenant.metadata)
    return [w.id for w in answer.webhooks]


async def test_a_retry_returns_the_first_response_and_creates_nothing(
    edge: grpc.aio.Channel, tenant: Tenant, suite: Suite
) -> None:
    hooks = webhook_service_pb2_grpc.WebhookServiceStub(edge)
    request_id = str(uuid.uuid4())
    first = await hooks.CreateWebhook(_request(request_id), metadata=tenant.metadata)
    again = await hooks.CreateWebhook(_request(request_id), metadata=tenant.metadata)
    assert again == first and again.secret.startswith("whsec_")
    assert await _all_webhooks(hooks, tenant) == [first.webhook.id]

    assert suite.database_url
    conn = await asyncpg.connect(suite.database_url)
    try:
        stored = await conn.fetchval(
            "SELECT response FROM request_ids WHERE owner = $1 AND method = 'CreateWebhook' AND request_id = $2",
            tenant.id,
            request_id,
        )
    finally:
        await conn.close()
    assert (
        stored is not None and first.secret.encode() not in stored and first.secret.encode()[6:] not in stored
    )


async def test_the_same_id_with_another_request_is_already_exists_naming_request_id(
    edge: grpc.aio.Channel, tenant: Tenant
) -> None:
    hooks = webhook_service_pb2_grpc.WebhookServiceStub(edge)
    request_id = str(uuid.uuid4())
    first = await hooks.CreateWebhook(_request(request_id), metadata=tenant.metadata)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hooks.CreateWebhook(_request(request_id, BOUNCED), metadata=tenant.metadata)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert bad_request_fields(caught.value) == ["request_id"]
    assert await _all_webhooks(hooks, tenant) == [first.webhook.id]


async def test_ids_are_per_tenant(edge: grpc.aio.Channel, tenant: Tenant, suite: Suite) -> None:
    other = await create_tenant(suite)
    hooks = webhook_service_pb2_grpc.WebhookServiceStub(edge)
    request_id = str(uuid.uuid4())
    mine = await hooks.CreateWebhook(_request(request_id), metadata=tenant.metadata)
    theirs = await hooks.CreateWebhook(_request(request_id), metadata=other.metadata)
    assert theirs.webhook.id != mine.webhook.id and theirs.secret != mine.secret


async def test_a_malformed_request_id_is_invalid_argument_and_creates_nothing(
    edge: grpc.aio.Channel, tenant: Tenant
) -> None:
    hooks = webhook_service_pb2_grpc.WebhookServiceStub(edge)
    for bad in ("x" * 257, "tab\there", "é"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await hooks.CreateWebhook(_request(bad), metadata=tenant.metadata)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert bad_request_fields(caught.value) == ["request_id"], bad
    assert await _all_webhooks(hooks, tenant) == []

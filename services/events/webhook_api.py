"""postwire.v1.WebhookService: translates proto <-> services.events.manage_webhooks and
services.events.redeliver."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import duration_pb2, timestamp_pb2
from postwire.v1 import event_pb2, webhook_service_pb2_grpc
from postwire.v1 import webhook_service_pb2 as pb

from libs.grpcx.auth import Context, KeyResolver
from libs.page_tokens import PageTokens
from libs.request_ids import RequestId
from services.events.kinds import DeliveryState
from services.events.manage_webhooks import WebhookCatalog, parse_id
from services.events.redeliver import Store as RedeliverStore
from services.events.redeliver import redeliver
from services.events.webhook_records import DeliveryRow, WebhookRow
from services.events.webhook_rules import WebhookSpec

__all__ = ["WebhookApi"]


def _timestamp(when: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when.astimezone(UTC))
    return stamp


def _event_type(value: int) -> event_pb2.EventType.ValueType:
    # Stored numbers pass through as they are (a type this build does not name stays a number).
    return event_pb2.EventType.ValueType(value)


def _webhook(row: WebhookRow) -> pb.Webhook:
    return pb.Webhook(
        id=row.id,
        url=row.url,
        event_types=[_event_type(t) for t in row.event_types],
        streams=list(row.streams),
        tags=list(row.tags),
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        create_time=_timestamp(row.create_time),
    )


def _delivery(row: DeliveryRow) -> pb.WebhookDelivery:
    out = pb.WebhookDelivery(
        event_id=row.event_id,
        event_type=_event_type(row.event_type),
        state=DeliveryState(row.state).proto,
        attempts=row.attempts,
        last_status=row.last_status,
        last_response=row.last_response,
        last_latency=duration_pb2.Duration(
            seconds=row.last_latency_ms // 1000, nanos=row.last_latency_ms % 1000 * 10**6
        ),
    )
    if row.last_attempt_time is not None:
        out.last_attempt_time.CopyFrom(_timestamp(row.last_attempt_time))
    if row.state == DeliveryState.PENDING:
        out.next_attempt_time.CopyFrom(_timestamp(row.next_attempt_time))
    return out


def _spec(webhook: pb.Webhook, fields: frozenset[str]) -> WebhookSpec:
    return WebhookSpec(
        url=webhook.url.strip(),
        event_types=tuple(webhook.event_types),
        streams=tuple(webhook.streams),
        tags=tuple(webhook.tags),
        enabled=webhook.enabled,
        fields=fields,
    )


class WebhookApi(webhook_service_pb2_grpc.WebhookServiceServicer):
    def __init__(
        self, catalog: WebhookCatalog, redeliveries: RedeliverStore, keys: KeyResolver, pages: PageTokens
    ) -> None:
        self._catalog = catalog
        self._redeliveries = redeliveries
        self._keys = keys
        self._pages = pages

    async def CreateWebhook(
        self, request: pb.CreateWebhookRequest, context: Context
    ) -> pb.CreateWebhookResponse:
        caller = await self._keys.authorize(context, "webhooks:write")
        request_id = RequestId.of(caller.tenant_id, "CreateWebhook", request)
        spec = _spec(request.webhook, frozenset({"url", "event_types", "streams", "tags"}))

        def answer(row: WebhookRow, secret: str) -> bytes:
            return pb.CreateWebhookResponse(webhook=_webhook(row), secret=secret).SerializeToString()

        return pb.CreateWebhookResponse.FromString(
            await self._catalog.create(caller.tenant_id, spec, request_id, answer)
        )

    async def GetWebhook(self, request: pb.GetWebhookRequest, context: Context) -> pb.GetWebhookResponse:
        caller = await self._keys.authorize(context, "webhooks:read")
        row = await self._catalog.get(caller.tenant_id, parse_id(request.id, "id"))
        return pb.GetWebhookResponse(webhook=_webhook(row))

    async def ListWebhooks(
        self, request: pb.ListWebhooksRequest, context: Context
    ) -> pb.ListWebhooksResponse:
        caller = await self._keys.authorize(context, "webhooks:read")
        cursor = self._pages.cursor(request, caller=caller.tenant_id)
        rows, token = await self._catalog.page(caller.tenant_id, cursor, request.page_size)
        return pb.ListWebhooksResponse(webhooks=[_webhook(r) for r in rows], next_page_token=token)

    async def UpdateWebhook(
        self, request: pb.UpdateWebhookRequest, context: Context
    ) -> pb.UpdateWebhookResponse:
        caller = await self._keys.authorize(context, "webhooks:write")
        webhook_id = parse_id(request.webhook.id, "webhook.id")
        spec = _spec(request.webhook, frozenset())
        row = await self._catalog.update(caller.tenant_id, webhook_id, spec, list(request.update_mask.paths))
        return pb.UpdateWebhookResponse(webhook=_webhook(row))

    async def DeleteWebhook(
        self, request: pb.DeleteWebhookRequest, context: Context
    ) -> pb.DeleteWebhookResponse:
        caller = await self._keys.authorize(context, "webhooks:write")
        await self._catalog.delete(caller.tenant_id, parse_id(request.id, "id"))
        return pb.DeleteWebhookResponse()

    async def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, context: Context
    ) -> pb.RotateWebhookSecretResponse:
        caller = await self._keys.authorize(context, "webhooks:write")
        overlap = request.overlap.ToTimedelta() if request.HasField("overlap") else None
        secret, expire = await self._catalog.rotate(caller.tenant_id, parse_id(request.id, "id"), overlap)
        return pb.RotateWebhookSecretResponse(secret=secret, previous_expire_time=_timestamp(expire))

    async def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context: Context
    ) -> pb.ListWebhookDeliveriesResponse:
        caller = await self._keys.authorize(context, "webhooks:read")
        webhook_id = parse_id(request.webhook_id, "webhook_id")
        cursor = self._pages.cursor(request, caller=caller.tenant_id)
        rows, token = await self._catalog.deliveries(
            caller.tenant_id, webhook_id, request.state, cursor, request.page_size
        )
        return pb.ListWebhookDeliveriesResponse(
            deliveries=[_delivery(r) for r in rows], next_page_token=token
        )

    async def RedeliverWebhookEvent(
        self, request: pb.RedeliverWebhookEventRequest, context: Context
    ) -> pb.RedeliverWebhookEventResponse:
        caller = await self._keys.authorize(context, "webhooks:write")
        webhook_id = parse_id(request.webhook_id, "webhook_id")
        row = await redeliver(self._redeliveries, caller.tenant_id, webhook_id, request.event_id)
        return pb.RedeliverWebhookEventResponse(delivery=_delivery(row))

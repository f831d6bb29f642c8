"""postwire.v1.WebhookService: translates proto <-> services.events.manage_webhooks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import grpc
from google.protobuf import duration_pb2, timestamp_pb2
from postwire.v1 import webhook_service_pb2 as pb
from postwire.v1 import webhook_service_pb2_grpc

from libs.errors import InvalidArgument
from libs.grpcx.auth import KeyResolver
from libs.page_tokens import PageTokens
from services.events.manage_webhooks import WebhookCatalog, parse_id
from services.events.pagination import page_size
from services.events.webhook_records import DeliveryRow, WebhookRow
from services.events.webhook_rules import WebhookSpec

__all__ = ["WebhookApi"]

_UPDATABLE = ("url", "event_types", "streams", "tags", "enabled")


def _timestamp(when: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when.astimezone(UTC))
    return stamp


def _webhook(row: WebhookRow) -> pb.Webhook:
    return pb.Webhook(
        id=row.id,
        url=row.url,
        event_types=list(row.event_types),
        streams=list(row.streams),
        tags=list(row.tags),
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        create_time=_timestamp(row.create_time),
    )


def _delivery(row: DeliveryRow) -> pb.WebhookDelivery:
    out = pb.WebhookDelivery(
        event_id=row.event_id,
        event_type=row.event_type,
        state=row.state,
        attempts=row.attempts,
        last_status=row.last_status,
        last_response=row.last_response,
        last_latency=duration_pb2.Duration(
            seconds=row.last_latency_ms // 1000, nanos=row.last_latency_ms % 1000 * 10**6
        ),
    )
    if row.last_attempt_time is not None:
        out.last_attempt_time.CopyFrom(_timestamp(row.last_attempt_time))
    if row.state == 1:
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


def _time_and_text(position: str) -> tuple[datetime, str]:
    stamp, sep, rest = position.partition("|")
    if not sep or not rest:
        raise ValueError(position)
    return datetime.fromisoformat(stamp), rest


def _time_and_id(position: str) -> tuple[datetime, uuid.UUID]:
    stamp, webhook_id = _time_and_text(position)
    return stamp, uuid.UUID(webhook_id)


class WebhookApi(webhook_service_pb2_grpc.WebhookServiceServicer):
    def __init__(self, catalog: WebhookCatalog, keys: KeyResolver, pages: PageTokens) -> None:
        self._catalog = catalog
        self._keys = keys
        self._pages = pages

    async def _tenant(self, context: grpc.aio.ServicerContext, scope: str) -> str:
        caller = await self._keys.resolve(context)
        caller.require(scope)
        return caller.tenant_id

    async def CreateWebhook(
        self, request: pb.CreateWebhookRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateWebhookResponse:
        tenant = await self._tenant(context, "webhooks:write")
        spec = _spec(request.webhook, frozenset({"url", "event_types", "streams", "tags"}))
        row, secret = await self._catalog.create(tenant, spec)
        return pb.CreateWebhookResponse(webhook=_webhook(row), secret=secret)

    async def GetWebhook(
        self, request: pb.GetWebhookRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetWebhookResponse:
        tenant = await self._tenant(context, "webhooks:read")
        row = await self._catalog.get(tenant, parse_id(request.id, "id"))
        return pb.GetWebhookResponse(webhook=_webhook(row))

    async def ListWebhooks(
        self, request: pb.ListWebhooksRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWebhooksResponse:
        tenant = await self._tenant(context, "webhooks:read")
        size = page_size(request.page_size)
        cursor = self._pages.cursor(request, caller=tenant)
        after = cursor.parse(_time_and_id)
        rows = await self._catalog.page(tenant, after, size + 1)
        page, token = cursor.page(rows, size, lambda r: f"{r.create_time.isoformat()}|{r.id}")
        return pb.ListWebhooksResponse(webhooks=[_webhook(r) for r in page], next_page_token=token)

    async def UpdateWebhook(
        self, request: pb.UpdateWebhookRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateWebhookResponse:
        tenant = await self._tenant(context, "webhooks:write")
        webhook_id = parse_id(request.webhook.id, "webhook.id")
        paths = list(request.update_mask.paths)
        unknown = [
            (f"update_mask.paths[{i}]", f"not one of {', '.join(_UPDATABLE)}")
            for i, p in enumerate(paths)
            if p not in _UPDATABLE
        ]
        if unknown:
            raise InvalidArgument(unknown)
        row = await self._catalog.update(tenant, webhook_id, _spec(request.webhook, frozenset(paths)))
        return pb.UpdateWebhookResponse(webhook=_webhook(row))

    async def DeleteWebhook(
        self, request: pb.DeleteWebhookRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteWebhookResponse:
        tenant = await self._tenant(context, "webhooks:write")
        await self._catalog.delete(tenant, parse_id(request.id, "id"))
        return pb.DeleteWebhookResponse()

    async def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.RotateWebhookSecretResponse:
        tenant = await self._tenant(context, "webhooks:write")
        overlap = request.overlap.ToTimedelta() if request.HasField("overlap") else None
        secret, expire = await self._catalog.rotate(tenant, parse_id(request.id, "id"), overlap)
        return pb.RotateWebhookSecretResponse(secret=secret, previous_expire_time=_timestamp(expire))

    async def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWebhookDeliveriesResponse:
        tenant = await self._tenant(context, "webhooks:read")
        webhook_id = parse_id(request.webhook_id, "webhook_id")
        size = page_size(request.page_size)
        cursor = self._pages.cursor(request, caller=tenant)
        rows = await self._catalog.deliveries(
            tenant, webhook_id, state=request.state, after=cursor.parse(_time_and_text), limit=size + 1
        )
        page, token = cursor.page(rows, size, lambda r: f"{r.create_time.isoformat()}|{r.event_id}")
        return pb.ListWebhookDeliveriesResponse(
            deliveries=[_delivery(r) for r in page], next_page_token=token
        )

    async def RedeliverWebhookEvent(
        self, request: pb.RedeliverWebhookEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.RedeliverWebhookEventResponse:
        tenant = await self._tenant(context, "webhooks:write")
        row = await self._catalog.redeliver(
            tenant, parse_id(request.webhook_id, "webhook_id"), request.event_id
        )
        return pb.RedeliverWebhookEventResponse(delivery=_delivery(row))

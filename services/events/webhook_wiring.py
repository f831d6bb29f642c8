"""Wiring of WebhookService and the webhook dispatcher into the events service (called from
server.py, kept apart so the events service's own wiring stays short)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import grpc
from postwire.v1 import webhook_service_pb2, webhook_service_pb2_grpc

from libs.bus import Bus
from libs.grpcx.auth import KeyResolver
from libs.grpcx.server import GrpcServer
from libs.http_guard import GuardedHttp
from libs.page_tokens import PageTokens
from libs.webhook_secrets import WebhookSecrets
from services.events.config import EventsConfig
from services.events.manage_webhooks import WebhookCatalog
from services.events.webhook_api import WebhookApi
from services.events.webhook_dispatch import WebhookDispatcher, refusal
from services.events.webhook_records import Claim
from services.events.webhook_store import WebhookStore

__all__ = ["Webhooks", "start_webhooks"]


@dataclass(frozen=True, slots=True)
class Webhooks:
    stop: Callable[[], Awaitable[None]]  # stop sending (in-flight attempts finish or are retried)
    close: Callable[[], Awaitable[None]]
    offer: Callable[[Sequence[Claim]], None]  # deliveries leased when their events were stored
    lease: timedelta  # how long such a lease lasts


def start_webhooks(
    server: GrpcServer,
    env: Mapping[str, str],
    config: EventsConfig,
    pool: asyncpg.Pool,
    bus: Bus,
    policy: grpc.aio.Channel,
) -> Webhooks:
    settings = config.webhooks
    http = GuardedHttp.from_env(env)
    secrets = WebhookSecrets(config.token_keys)
    store = WebhookStore(pool)
    catalog = WebhookCatalog(store, secrets, refusal(http), allow_plain_http=settings.allow_plain_http)
    server.add(
        webhook_service_pb2_grpc.add_WebhookServiceServicer_to_server,
        WebhookApi(
            catalog,
            store,
            KeyResolver(policy, ttl=config.common.key_cache_seconds),
            PageTokens(config.token_keys),
        ),
        webhook_service_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name,
    )
    dispatcher = WebhookDispatcher(
        store,
        http,
        secrets,
        bus,
        schedule=settings.schedule,
        disable_after=timedelta(seconds=settings.disable_after_seconds),
        timeout=settings.timeout_seconds,
        max_in_flight=settings.max_in_flight,
        per_webhook=settings.per_endpoint,
    )
    dispatcher.start()
    return Webhooks(stop=dispatcher.stop, close=http.close, offer=dispatcher.offer, lease=dispatcher.lease)

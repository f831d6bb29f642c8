"""Wiring for the events service."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from postwire.internal.v1 import event_reader_service_pb2, event_reader_service_pb2_grpc
from postwire.v1 import event_service_pb2, event_service_pb2_grpc

from libs.bus import EVENTS_STREAM, Bus, ConsumerSpec
from libs.db import connect_pool
from libs.grpcx.auth import KeyResolver
from libs.grpcx.channel import open_internal_channel
from libs.grpcx.server import GrpcServer
from libs.page_tokens import PageTokens
from libs.readiness import database_check, nats_check
from libs.service_main import Service, run_main, serve
from libs.sweeper import Periodic
from services.events.api import EventApi
from services.events.config import EventsConfig
from services.events.consumer import FETCH_LINGER_SECONDS, EventRecorder
from services.events.policy_client import PolicySuppressions
from services.events.reader import EventReader
from services.events.relay_suppressions import SuppressionRelay
from services.events.store import EventsStore
from services.events.stored_notices import StoredNotices
from services.events.stream_cursor import StreamCursors
from services.events.stream_events import EventStreams
from services.events.suppression_store import SuppressionOutbox
from services.events.webhook_wiring import start_webhooks


async def run(env: Mapping[str, str]) -> None:
    config = EventsConfig.from_env(env)

    async def wire(server: GrpcServer) -> Service:
        pool = await connect_pool(
            config.common.database_url,
            application_name="postwire-events",
            min_size=config.common.db_pool_min_size,
            max_size=config.common.db_pool_max_size,
            statement_cache_size=config.common.db_statement_cache_size,
            acquire_timeout=config.common.db_acquire_timeout_seconds,
        )
        bus = await Bus.connect(config.common.nats_url, name="postwire-events")
        policy = open_internal_channel(config.policy_addr, token=config.common.internal_token)
        store = EventsStore(pool)
        notices = StoredNotices(bus.nc, poll_seconds=config.stream_poll_seconds)
        server.add(
            event_service_pb2_grpc.add_EventServiceServicer_to_server,
            EventApi(
                store,
                EventStreams(
                    store,
                    notices,
                    StreamCursors(config.token_keys),
                    max_streams_per_tenant=config.max_streams_per_tenant,
                ),
                KeyResolver(policy, ttl=config.common.key_cache_seconds),
                PageTokens(config.token_keys),
            ),
            event_service_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
        )
        server.add(
            event_reader_service_pb2_grpc.add_EventReaderServiceServicer_to_server,
            EventReader(store),
            event_reader_service_pb2.DESCRIPTOR.services_by_name["EventReaderService"].full_name,
        )
        recorder = EventRecorder(
            store,
            bus,
            notices,
            stall=timedelta(seconds=config.common.stall_seconds),
            retry=config.common.stage_retry,
        )
        bus.start_consumer(
            ConsumerSpec(stream=EVENTS_STREAM, durable="events", subject="postwire.events.>"),
            recorder.handle,
            concurrency=64,
            failures=recorder,
            retry=config.common.stage_retry,
            linger=FETCH_LINGER_SECONDS,
        )
        sweeper = Periodic("event-outbox-sweeper", config.common.sweep_interval_seconds, recorder.sweep)
        sweeper.start()
        relay = SuppressionRelay(SuppressionOutbox(pool), PolicySuppressions(policy))
        suppressions = Periodic("suppression-outbox", config.common.sweep_interval_seconds, relay.drain)
        suppressions.start()
        webhooks = start_webhooks(server, env, config, pool, bus, policy)
        # First attempts go straight from the storing transaction to the dispatcher.
        store.hand_deliveries_to(webhooks.offer, lease=webhooks.lease)
        return Service(
            stop_intake=[sweeper.stop, suppressions.stop, bus.stop_consumers, webhooks.stop],
            close=[webhooks.close, bus.close, policy.close, pool.close],
            ready=[database_check(pool), nats_check(bus.nc)],
        )

    await serve(config.common, env, wire)


def main() -> None:
    run_main(run)

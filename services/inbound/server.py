"""Wiring for the inbound role: the SMTP listener for bounces and complaints. Its gRPC port
serves health and reflection only; inbound has no public API, so the edge routes nothing here."""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence

from postwire.internal.v1 import bus_pb2

from libs.bus import Bus
from libs.db import connect_pool
from libs.event_outbox import publish_events
from libs.grpcx.server import GrpcServer
from libs.readiness import database_check
from libs.return_path import ReturnPathTokens
from libs.service_main import Service, run_main, serve
from services.inbound.config import MAX_MESSAGE_BYTES, InboundConfig
from services.inbound.listener import InboundListener
from services.inbound.store import InboundStore
from services.inbound.take_report import TakeReport


def _tls(config: InboundConfig) -> ssl.SSLContext | None:
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


async def run(env: Mapping[str, str]) -> None:
    config = InboundConfig.from_env(env)

    async def wire(server: GrpcServer) -> Service:
        pool = await connect_pool(
            config.common.database_url,
            application_name="postwire-inbound",
            min_size=config.common.db_pool_min_size,
            max_size=config.common.db_pool_max_size,
            statement_cache_size=config.common.db_statement_cache_size,
            acquire_timeout=config.common.db_acquire_timeout_seconds,
        )
        bus = await Bus.connect(config.common.nats_url, name="postwire-inbound")
        tokens = ReturnPathTokens(config.token_keys)

        async def publish(events: Sequence[bus_pb2.EventEnvelope]) -> None:
            await publish_events(bus, events)

        listener = InboundListener(
            TakeReport(InboundStore(pool), publish, tokens),
            host=config.smtp_host,
            port=config.smtp_port,
            hostname=config.hostname,
            return_path=config.return_path,
            tokens=tokens,
            max_message_bytes=MAX_MESSAGE_BYTES,
            max_connections_per_ip=config.max_connections_per_ip,
            tls=_tls(config),
        )
        await listener.start()

        async def stop_listener() -> None:
            await listener.stop(grace=config.common.shutdown_grace_seconds)

        return Service(
            stop_intake=[stop_listener],
            close=[bus.close, pool.close],
            # Not NATS: a report's event goes through the outbox, so port 25 keeps taking
            # bounces and complaints through a NATS outage (as submission keeps taking sends).
            ready=[database_check(pool)],
        )

    await serve(config.common, env, wire)


def main() -> None:
    run_main(run)

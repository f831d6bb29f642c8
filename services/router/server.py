"""Wiring for the router: a JetStream consumer plus the stalled-message sweeper."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from postwire.internal.v1 import render_service_pb2_grpc

from libs.bus import ROUTE_SUBJECT, WORK_STREAM, Bus, ConsumerSpec
from libs.db import connect_pool
from libs.grpcx.channel import open_internal_channel
from libs.grpcx.server import GrpcServer
from libs.readiness import database_check, nats_check
from libs.service_main import Service, run_main, serve
from libs.sweeper import Periodic
from services.router.config import RouterConfig
from services.router.consumer import Router
from services.router.store import RouterStore


async def run(env: Mapping[str, str]) -> None:
    config = RouterConfig.from_env(env)

    async def wire(server: GrpcServer) -> Service:
        pool = await connect_pool(
            config.common.database_url,
            application_name="postwire-router",
            min_size=config.common.db_pool_min_size,
            max_size=config.common.db_pool_max_size,
            statement_cache_size=config.common.db_statement_cache_size,
            acquire_timeout=config.common.db_acquire_timeout_seconds,
        )
        bus = await Bus.connect(config.common.nats_url, name="postwire-router")
        template = open_internal_channel(config.template_addr, token=config.common.internal_token)
        spec = ConsumerSpec(
            stream=WORK_STREAM, durable="router", subject=ROUTE_SUBJECT, ack_wait=config.ack_wait
        )
        router = Router(
            RouterStore(pool),
            bus,
            render_service_pb2_grpc.RenderServiceStub(template),
            hostname=config.hostname,
            stall=timedelta(seconds=config.common.stall_seconds),
            retry=config.common.stage_retry,
            lease=timedelta(seconds=spec.ack_wait),
        )
        bus.start_consumer(
            spec,
            router.handle,
            concurrency=config.concurrency,
            failures=router,
            retry=config.common.stage_retry,
        )
        sweeper = Periodic("route-sweeper", config.common.sweep_interval_seconds, router.sweep)
        sweeper.start()
        return Service(
            stop_intake=[sweeper.stop, bus.stop_consumers],
            close=[bus.close, template.close, pool.close],
            ready=[database_check(pool), nats_check(bus.nc)],
        )

    await serve(config.common, env, wire)


def main() -> None:
    run_main(run)

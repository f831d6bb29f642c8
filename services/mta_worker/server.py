"""Wiring for the mta_worker: a JetStream consumer plus the retry scheduler."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from datetime import timedelta

from libs.bus import DELIVER_SUBJECT, WORK_STREAM, Bus, ConsumerSpec
from libs.db import connect_pool
from libs.grpcx.server import GrpcServer
from libs.service_main import Service, serve
from libs.sweeper import Periodic
from services.mta_worker.config import WorkerConfig
from services.mta_worker.consumer import Worker
from services.mta_worker.smtp_delivery import Relay
from services.mta_worker.stage_failures import DeliveryFailures
from services.mta_worker.store import WorkerStore


async def run(env: Mapping[str, str]) -> None:
    config = WorkerConfig.from_env(env)

    async def wire(server: GrpcServer) -> Service:
        pool = await connect_pool(config.common.database_url)
        bus = await Bus.connect(config.common.nats_url, name="postwire-mta-worker")
        host, port = config.smarthost
        worker = Worker(
            WorkerStore(pool),
            bus,
            Relay(host, port, timeout=config.smtp_timeout, helo_name=config.hostname),
            config.retry,
            ack_wait=config.ack_wait,
            stall=timedelta(seconds=config.common.stall_seconds),
        )
        bus.start_consumer(
            ConsumerSpec(
                stream=WORK_STREAM, durable="mta_worker", subject=DELIVER_SUBJECT, ack_wait=config.ack_wait
            ),
            worker.handle,
            concurrency=config.concurrency,
            failures=DeliveryFailures(
                pool, bus, config.common.stage_retry, stall=timedelta(seconds=config.common.stall_seconds)
            ),
            retry=config.common.stage_retry,
        )
        scheduler = Periodic("retry-scheduler", config.common.sweep_interval_seconds, worker.sweep)
        scheduler.start()
        return Service(stop_intake=[scheduler.stop, bus.stop_consumers], close=[bus.close, pool.close])

    await serve(config.common, env, wire)


def main() -> None:
    asyncio.run(run(os.environ))

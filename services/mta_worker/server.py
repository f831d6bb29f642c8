"""Wiring for the mta_worker: a JetStream consumer plus the retry scheduler."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

from postwire.internal.v1 import bus_pb2

from libs.bus import DELIVER_SUBJECT, RETRY_SUBJECT, WORK_STREAM, Bus, ConsumerSpec
from libs.db import connect_pool
from libs.domain_keys import DomainKeyReader, Sealer
from libs.event_outbox import publish_events
from libs.grpcx.server import GrpcServer
from libs.readiness import database_check, nats_check
from libs.return_path import ReturnPathTokens
from libs.service_main import Service, run_main, serve
from libs.sweeper import Periodic
from services.mta_worker.config import WorkerConfig
from services.mta_worker.connection_pool import ConnectionPool
from services.mta_worker.consumer import Delivery, Worker
from services.mta_worker.endpoints import Endpoints
from services.mta_worker.mx_lookup import MxResolver
from services.mta_worker.queue_watch import QueueWatch
from services.mta_worker.recorder import Recorder
from services.mta_worker.stage_failures import DeliveryFailures
from services.mta_worker.store import WorkerStore


async def run(env: Mapping[str, str]) -> None:
    config = WorkerConfig.from_env(env)

    async def wire(server: GrpcServer) -> Service:
        pool = await connect_pool(
            config.common.database_url,
            application_name="postwire-mta-worker",
            min_size=config.common.db_pool_min_size,
            max_size=config.common.db_pool_max_size,
            statement_cache_size=config.common.db_statement_cache_size,
            acquire_timeout=config.common.db_acquire_timeout_seconds,
        )
        bus = await Bus.connect(config.common.nats_url, name="postwire-mta-worker")
        store = WorkerStore(pool)
        connections = ConnectionPool(
            max_messages=config.max_messages_per_connection, idle_seconds=config.connection_idle_seconds
        )
        connections.start()
        delivery = Delivery(
            rules=config.routing,
            resolver=MxResolver(
                nameserver=config.dns_resolver, timeout=config.dns_timeout, allow=config.mx_addresses
            ),
            endpoints=Endpoints(config.relay, mx_port=config.mx_port, mx_ca_file=config.mx_ca_file),
            pool=connections,
            keys=DomainKeyReader(pool, Sealer(config.secret_key)),
            tokens=ReturnPathTokens(config.token_keys),
            return_path=config.return_path,
            tls_required_domains=config.tls_required_domains,
            relay_tls=config.relay.tls,
            timeouts=config.timeouts,
            helo_name=config.hostname,
        )

        async def publish(events: Sequence[bus_pb2.EventEnvelope]) -> None:
            # Every outcome's events are already rows of the outbox, committed with it: the
            # PubAck would only tell us to log a failure the sweeper repairs anyway.
            await publish_events(bus, events, confirmed=False)

        recorder = Recorder(store, publish)
        recorder.start()
        worker = Worker(
            store,
            bus,
            delivery,
            config.retry,
            recorder,
            ack_wait=config.ack_wait,
            stall=timedelta(seconds=config.common.stall_seconds),
            slots_per_destination=config.slots_per_destination,
        )
        # Both lanes count and bound failures the same way (one bookkeeping, in PostgreSQL).
        failures = DeliveryFailures(
            pool, bus, config.common.stage_retry, stall=timedelta(seconds=config.common.stall_seconds)
        )
        bus.start_consumer(
            ConsumerSpec(
                stream=WORK_STREAM, durable="mta_worker", subject=DELIVER_SUBJECT, ack_wait=config.ack_wait
            ),
            worker.handle,
            concurrency=config.concurrency,
            failures=failures,
            retry=config.common.stage_retry,
        )
        bus.start_consumer(
            ConsumerSpec(
                stream=WORK_STREAM,
                durable="mta_worker_retry",
                subject=RETRY_SUBJECT,
                ack_wait=config.ack_wait,
            ),
            worker.handle,
            concurrency=config.retry_concurrency,
            failures=failures,
            retry=config.common.stage_retry,
        )
        scheduler = Periodic("retry-scheduler", config.common.sweep_interval_seconds, worker.sweep)
        scheduler.start()
        # The queue gauges exist only where metrics are served; one replica reports them.
        watch: list[QueueWatch] = []
        if config.common.metrics_listen is not None:
            watch.append(
                QueueWatch(config.common.database_url, bus.js, interval=config.common.sweep_interval_seconds)
            )
            watch[0].start()
        grace = config.common.shutdown_grace_seconds

        async def stop_delivery() -> None:
            worker.begin_shutdown(grace)
            # The worker settles every transaction by the grace; the margin covers recording them.
            await bus.stop_consumers(timeout=grace + 1.0)

        async def close_recorder() -> None:
            await recorder.close(timeout=2.0)

        return Service(
            stop_intake=[scheduler.stop, stop_delivery],
            close=[*(w.stop for w in watch), close_recorder, connections.close, bus.close, pool.close],
            ready=[database_check(pool), nats_check(bus.nc)],
        )

    await serve(config.common, env, wire)


def main() -> None:
    run_main(run)

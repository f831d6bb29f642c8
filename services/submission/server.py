"""Wiring for the submission service."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from postwire.internal.v1 import (
    event_reader_service_pb2_grpc,
    policy_service_pb2_grpc,
    render_service_pb2_grpc,
)
from postwire.v1 import mail_service_pb2, mail_service_pb2_grpc

from libs.bus import Bus
from libs.db import connect_pool
from libs.grpcx.auth import KeyResolver
from libs.grpcx.channel import open_internal_channel
from libs.grpcx.server import GrpcServer
from libs.readiness import database_check
from libs.service_main import Service, run_main, serve
from services.submission.accept import Accept
from services.submission.accept_batch import AcceptBatch
from services.submission.acceptance import Stamp
from services.submission.api import MailApi
from services.submission.config import SubmissionConfig
from services.submission.get_message import GetMessage
from services.submission.policy_client import PolicyClient
from services.submission.publisher import Publisher
from services.submission.store import SubmissionStore
from services.submission.template_client import TemplateClient
from services.submission.timeline import EventsTimeline


async def run(env: Mapping[str, str]) -> None:
    config = SubmissionConfig.from_env(env)

    async def wire(server: GrpcServer) -> Service:
        pool = await connect_pool(
            config.common.database_url,
            application_name="postwire-submission",
            min_size=config.common.db_pool_min_size,
            max_size=config.common.db_pool_max_size,
            statement_cache_size=config.common.db_statement_cache_size,
            acquire_timeout=config.common.db_acquire_timeout_seconds,
        )
        bus = await Bus.connect(config.common.nats_url, name="postwire-submission")
        policy = open_internal_channel(config.policy_addr, token=config.common.internal_token)
        template = open_internal_channel(config.template_addr, token=config.common.internal_token)
        events = open_internal_channel(config.events_addr, token=config.common.internal_token)
        store = SubmissionStore(pool)
        policy_client = PolicyClient(policy_service_pb2_grpc.PolicyServiceStub(policy))
        template_client = TemplateClient(render_service_pb2_grpc.RenderServiceStub(template))
        publisher = Publisher(bus)
        stamp = Stamp(stall=timedelta(seconds=config.common.stall_seconds))
        server.add(
            mail_service_pb2_grpc.add_MailServiceServicer_to_server,
            MailApi(
                accept=Accept(
                    store=store, policy=policy_client, templates=template_client, publisher=publisher, stamp=stamp
                ),
                accept_batch=AcceptBatch(
                    store=store, policy=policy_client, templates=template_client, publisher=publisher, stamp=stamp
                ),
                get_message=GetMessage(
                    store=store,
                    timeline=EventsTimeline(event_reader_service_pb2_grpc.EventReaderServiceStub(events)),
                ),
                keys=KeyResolver(policy, ttl=config.common.key_cache_seconds),
            ),
            mail_service_pb2.DESCRIPTOR.services_by_name["MailService"].full_name,
        )
        return Service(
            close=[policy_client.close, policy.close, template.close, events.close, bus.close, store.close, pool.close],
            # Not NATS: an accepted message is durable at the commit and the outbox sweeper
            # publishes it later, so sends keep working through a NATS outage (RELIABILITY R7).
            ready=[database_check(pool)],
        )

    await serve(config.common, env, wire)


def main() -> None:
    run_main(run)

"""Wiring for the template service."""

from __future__ import annotations

from collections.abc import Mapping

from postwire.internal.v1 import render_service_pb2, render_service_pb2_grpc
from postwire.v1 import template_service_pb2, template_service_pb2_grpc

from libs.db import connect_pool
from libs.grpcx.auth import KeyResolver
from libs.grpcx.channel import open_internal_channel
from libs.grpcx.server import GrpcServer
from libs.page_tokens import PageTokens
from libs.readiness import database_check
from libs.service_main import Service, run_main, serve
from services.template.api import RenderApi, TemplateApi
from services.template.config import TemplateConfig
from services.template.manage_templates import ManageTemplates
from services.template.render_message import RenderMessage
from services.template.render_pool import RenderPool
from services.template.save_template import SaveTemplate
from services.template.store import TemplateStore, TemplateVersions


async def run(env: Mapping[str, str]) -> None:
    config = TemplateConfig.from_env(env)

    async def wire(server: GrpcServer) -> Service:
        pool = await connect_pool(
            config.common.database_url,
            application_name="postwire-template",
            min_size=config.common.db_pool_min_size,
            max_size=config.common.db_pool_max_size,
            statement_cache_size=config.common.db_statement_cache_size,
            acquire_timeout=config.common.db_acquire_timeout_seconds,
        )
        policy = open_internal_channel(config.policy_addr, token=config.common.internal_token)
        renders = RenderPool(
            workers=config.render_workers,
            memory_mb=config.render_memory_mb,
            time_limit_seconds=config.render_time_limit_seconds,
        )
        await renders.start()
        templates, versions = TemplateStore(pool), TemplateVersions(pool)
        render = RenderMessage(templates, renders)
        server.add(
            template_service_pb2_grpc.add_TemplateServiceServicer_to_server,
            TemplateApi(
                SaveTemplate(templates, versions),
                render,
                ManageTemplates(templates, versions),
                KeyResolver(policy, ttl=config.common.key_cache_seconds),
                PageTokens(config.token_keys),
            ),
            template_service_pb2.DESCRIPTOR.services_by_name["TemplateService"].full_name,
        )
        server.add(
            render_service_pb2_grpc.add_RenderServiceServicer_to_server,
            RenderApi(render),
            render_service_pb2.DESCRIPTOR.services_by_name["RenderService"].full_name,
        )
        return Service(close=[renders.close, policy.close, pool.close], ready=[database_check(pool)])

    await serve(config.common, env, wire)


def main() -> None:
    # The stdlib loop unless POSTWIRE_EVENT_LOOP says otherwise: on uvloop the render pool's
    # create_subprocess_exec is libuv's fork(), after which gRPC's fork handlers write plain-text
    # lines to stderr (not JSON); and this service spends next to no CPU per message anyway.
    run_main(run, default_loop="asyncio")

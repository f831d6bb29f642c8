"""Wiring for the policy service."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

from postwire.internal.v1 import policy_service_pb2, policy_service_pb2_grpc
from postwire.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    domain_service_pb2,
    domain_service_pb2_grpc,
    suppression_service_pb2,
    suppression_service_pb2_grpc,
)

from libs.db import connect_pool
from libs.domain_keys import Sealer
from libs.grpcx.server import GrpcServer
from libs.page_tokens import PageTokens
from libs.service_main import Service, serve
from services.policy.admin_api import AdminApi
from services.policy.api import PolicyApi
from services.policy.config import PolicyConfig
from services.policy.core import PolicyCore
from services.policy.dns_lookup import DnsLookup
from services.policy.domain_api import DnsSettings, DomainApi, Domains
from services.policy.domain_store import DomainStore
from services.policy.store import PolicyStore
from services.policy.suppression_api import SuppressionApi
from services.policy.suppression_lookup import Suppressions
from services.policy.suppression_store import SuppressionStore


async def run(env: Mapping[str, str]) -> None:
    config = PolicyConfig.from_env(env)

    async def wire(server: GrpcServer) -> Service:
        pool = await connect_pool(config.common.database_url)
        suppressions = Suppressions(SuppressionStore(pool), cache_seconds=config.common.key_cache_seconds)
        domains = Domains(
            DomainStore(pool),
            Sealer(config.secret_key),
            DnsLookup(config.dns_resolver, timeout=config.dns_timeout_seconds),
            DnsSettings(config.spf_include, config.return_path.host, config.return_path.label),
            dev_from_domains=config.dev_from_domains,
            cache_seconds=config.common.key_cache_seconds,
        )
        core = PolicyCore(
            PolicyStore(pool), config.api_key_pepper, cache_seconds=config.common.key_cache_seconds
        )
        pages = PageTokens(config.token_keys)
        server.add(
            policy_service_pb2_grpc.add_PolicyServiceServicer_to_server,
            PolicyApi(core, suppressions, domains),
            policy_service_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name,
        )
        server.add(
            suppression_service_pb2_grpc.add_SuppressionServiceServicer_to_server,
            SuppressionApi(core, suppressions, pages),
            suppression_service_pb2.DESCRIPTOR.services_by_name["SuppressionService"].full_name,
        )
        server.add(
            domain_service_pb2_grpc.add_DomainServiceServicer_to_server,
            DomainApi(core, domains, pages),
            domain_service_pb2.DESCRIPTOR.services_by_name["DomainService"].full_name,
        )
        server.add(
            admin_service_pb2_grpc.add_AdminServiceServicer_to_server,
            AdminApi(core, config.admin_token, pages),
            admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
        )
        return Service(close=[pool.close])

    await serve(config.common, env, wire)


def main() -> None:
    asyncio.run(run(os.environ))

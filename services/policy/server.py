"""Wiring for the policy service."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime

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
from libs.readiness import database_check
from libs.service_main import Service, run_main, serve
from services.policy.admin_api import AdminApi
from services.policy.admin_credential import AdminCredential
from services.policy.admit import Admit
from services.policy.api import PolicyApi
from services.policy.authenticate import Authenticator
from services.policy.config import PolicyConfig
from services.policy.dns_lookup import DnsLookup
from services.policy.domain_api import DomainApi
from services.policy.domain_store import DomainStore
from services.policy.domains import DomainKeys, generate_keys
from services.policy.local_keys import LocalKeys
from services.policy.manage_api_keys import ManageApiKeys
from services.policy.manage_domains import DnsSettings, ManageDomains
from services.policy.manage_suppressions import ManageSuppressions
from services.policy.manage_tenants import ManageTenants
from services.policy.store import PolicyStore
from services.policy.suppression_api import SuppressionApi
from services.policy.suppression_lookup import Suppressions
from services.policy.suppression_store import CoalescedLookups, SuppressionStore
from services.policy.tenant_settings import TenantSettings
from services.policy.verified_domains import VerifiedDomains


async def _make_keys() -> DomainKeys:
    # RSA-2048 generation takes tens of milliseconds of CPU: off the event loop.
    return await asyncio.to_thread(generate_keys)


def _now() -> datetime:
    return datetime.now(UTC)


async def run(env: Mapping[str, str]) -> None:
    config = PolicyConfig.from_env(env)

    async def wire(server: GrpcServer) -> Service:
        pool = await connect_pool(
            config.common.database_url,
            application_name="postwire-policy",
            min_size=config.common.db_pool_min_size,
            max_size=config.common.db_pool_max_size,
            statement_cache_size=config.common.db_statement_cache_size,
            acquire_timeout=config.common.db_acquire_timeout_seconds,
        )
        cache_seconds = config.common.key_cache_seconds
        store = PolicyStore(pool)
        sealer = Sealer(config.secret_key)
        pages = PageTokens(config.token_keys)
        authenticator = Authenticator(store, config.api_key_pepper, cache_seconds=cache_seconds)
        keys = LocalKeys(authenticator)
        settings = TenantSettings(store, cache_seconds=cache_seconds)
        suppression_store = SuppressionStore(pool)
        coalesced = CoalescedLookups(pool)
        lookups = Suppressions(coalesced, cache_seconds=cache_seconds)
        suppressions = ManageSuppressions(suppression_store, lookups, clock=_now)
        domain_store = DomainStore(pool)
        verified = VerifiedDomains(
            domain_store, dev_from_domains=config.dev_from_domains, cache_seconds=cache_seconds
        )
        domains = ManageDomains(
            domain_store,
            sealer,
            _make_keys,
            DnsLookup(config.dns_resolver, timeout=config.dns_timeout_seconds),
            DnsSettings(config.spf_include, config.return_path.host, config.return_path.label),
            verified,
        )

        def tenant_changed(tenant_id: str) -> None:
            settings.forget(tenant_id)
            authenticator.forget_all()

        server.add(
            policy_service_pb2_grpc.add_PolicyServiceServicer_to_server,
            PolicyApi(authenticator, Admit(settings, verified, lookups, store), suppressions),
            policy_service_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name,
        )
        server.add(
            suppression_service_pb2_grpc.add_SuppressionServiceServicer_to_server,
            SuppressionApi(keys, suppressions, pages),
            suppression_service_pb2.DESCRIPTOR.services_by_name["SuppressionService"].full_name,
        )
        server.add(
            domain_service_pb2_grpc.add_DomainServiceServicer_to_server,
            DomainApi(keys, domains, pages),
            domain_service_pb2.DESCRIPTOR.services_by_name["DomainService"].full_name,
        )
        server.add(
            admin_service_pb2_grpc.add_AdminServiceServicer_to_server,
            AdminApi(
                AdminCredential(config.admin_token),
                ManageTenants(store, changed=tenant_changed),
                ManageApiKeys(store, sealer, config.api_key_pepper),
                pages,
            ),
            admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
        )
        return Service(close=[coalesced.close, pool.close], ready=[database_check(pool)])

    await serve(config.common, env, wire)


def main() -> None:
    run_main(run)

"""postwire.v1.DomainService (public), and the From-domain check admission makes."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import grpc
from postwire.v1 import domain_service_pb2, domain_service_pb2_grpc

from libs.domain_keys import Sealer
from libs.errors import FailedPrecondition, InvalidArgument
from libs.page_tokens import RESOURCES_PAGE_SIZE, PageTokens, page_size
from libs.ttl_cache import TtlCache
from services.policy.core import PolicyCore
from services.policy.dns_lookup import DnsLookup
from services.policy.domain_store import DomainRow, DomainStore
from services.policy.domains import (
    Record,
    RecordStatus,
    check_records,
    domain_problem,
    generate_keys,
    normalise_domain,
    records_for,
)


@dataclass(frozen=True, slots=True)
class DnsSettings:
    spf_include: str
    return_path_host: str
    return_path_label: str


class Domains:
    """Domain rules shared by DomainService and admission."""

    def __init__(
        self,
        store: DomainStore,
        sealer: Sealer,
        lookup: DnsLookup,
        settings: DnsSettings,
        *,
        dev_from_domains: frozenset[str],
        cache_seconds: float,
    ) -> None:
        self.store = store
        self.sealer = sealer
        self.lookup = lookup
        self.settings = settings
        self._dev = dev_from_domains
        self._verified: TtlCache[bool] = TtlCache(cache_seconds)

    def records(self, row: DomainRow) -> list[Record]:
        return records_for(
            row.name,
            rsa_selector=row.rsa_selector,
            rsa_public=row.rsa_public,
            ed25519_selector=row.ed25519_selector,
            ed25519_public=row.ed25519_public,
            spf_include=self.settings.spf_include,
            return_path_host=self.settings.return_path_host,
            return_path_label=self.settings.return_path_label,
        )

    async def check_from(self, tenant_id: str, from_domain: str) -> None:
        """Refuse a From domain that is not one of the tenant's verified domains. One answer for
        unregistered, unverified and another tenant's domain, so none can be told apart."""
        domain = normalise_domain(from_domain)
        if domain in self._dev:
            return
        verified = self._verified.get((tenant_id, domain))
        if verified is None:
            verified = await self.store.is_verified(tenant_id, domain)
            self._verified.put((tenant_id, domain), verified)
        if not verified:
            raise FailedPrecondition(
                f"from.address: '{domain}' is not a verified sending domain of this tenant",
                violations=[
                    (
                        "DOMAIN_NOT_VERIFIED",
                        "from.address",
                        f"register '{domain}' with DomainService, publish its records and verify it",
                    )
                ],
            )

    def forget(self, tenant_id: str, domain: str) -> None:
        self._verified.drop((tenant_id, domain))


def _name(value: str) -> str:
    name = normalise_domain(value)
    problem = domain_problem(name) if name else "a domain name is required"
    if problem:
        raise InvalidArgument([("name", problem)])
    return name


class DomainApi(domain_service_pb2_grpc.DomainServiceServicer):
    def __init__(self, core: PolicyCore, domains: Domains, pages: PageTokens) -> None:
        self._core = core
        self._domains = domains
        self._pages = pages

    def _proto(self, row: DomainRow) -> domain_service_pb2.Domain:
        out = domain_service_pb2.Domain(
            name=row.name,
            state=domain_service_pb2.DOMAIN_STATE_VERIFIED
            if row.verified
            else domain_service_pb2.DOMAIN_STATE_PENDING,
            records=[
                domain_service_pb2.DnsRecord(
                    purpose=int(r.purpose),  # type: ignore[arg-type]
                    type=r.type,
                    name=r.name,
                    value=r.value,
                    required=r.required,
                    status=row.record_status.get(r.purpose.name, RecordStatus.UNCHECKED),  # type: ignore[arg-type]
                )
                for r in self._domains.records(row)
            ],
        )
        out.create_time.FromDatetime(row.create_time)
        if row.check_time is not None:
            out.check_time.FromDatetime(row.check_time)
        if row.verify_time is not None:
            out.verify_time.FromDatetime(row.verify_time)
        return out

    async def CreateDomain(
        self, request: domain_service_pb2.CreateDomainRequest, context: grpc.aio.ServicerContext
    ) -> domain_service_pb2.CreateDomainResponse:
        caller = await self._core.caller(context, "domains:write")
        name = _name(request.name)
        # RSA-2048 generation takes tens of milliseconds of CPU: off the event loop.
        keys = await asyncio.to_thread(generate_keys)
        domain_id = str(uuid.uuid4())
        row = await self._domains.store.create(
            domain_id,
            caller.tenant_id,
            name,
            rsa_selector=keys.rsa_selector,
            rsa_private=self._domains.sealer.seal(keys.rsa_private_pem, domain_id),
            rsa_public=keys.rsa_public,
            ed25519_selector=keys.ed25519_selector,
            ed25519_private=self._domains.sealer.seal(keys.ed25519_private_pem, domain_id),
            ed25519_public=keys.ed25519_public,
        )
        return domain_service_pb2.CreateDomainResponse(domain=self._proto(row))

    async def GetDomain(
        self, request: domain_service_pb2.GetDomainRequest, context: grpc.aio.ServicerContext
    ) -> domain_service_pb2.GetDomainResponse:
        caller = await self._core.caller(context, "domains:read")
        row = await self._domains.store.get(caller.tenant_id, _name(request.name))
        return domain_service_pb2.GetDomainResponse(domain=self._proto(row))

    async def ListDomains(
        self, request: domain_service_pb2.ListDomainsRequest, context: grpc.aio.ServicerContext
    ) -> domain_service_pb2.ListDomainsResponse:
        caller = await self._core.caller(context, "domains:read")
        size = page_size(request.page_size, default=RESOURCES_PAGE_SIZE)
        cursor = self._pages.cursor(request, caller=caller.tenant_id)
        rows = await self._domains.store.list(caller.tenant_id, after=cursor.after, limit=size + 1)
        page, token = cursor.page(rows, size, lambda r: r.name)
        return domain_service_pb2.ListDomainsResponse(
            domains=[self._proto(r) for r in page], next_page_token=token
        )

    async def VerifyDomain(
        self, request: domain_service_pb2.VerifyDomainRequest, context: grpc.aio.ServicerContext
    ) -> domain_service_pb2.VerifyDomainResponse:
        caller = await self._core.caller(context, "domains:write")
        row = await self._domains.store.get(caller.tenant_id, _name(request.name))
        records = self._domains.records(row)
        answers = await self._domains.lookup.answers(records)
        statuses, verified = check_records(records, answers, self._domains.settings.spf_include)
        row = await self._domains.store.record_check(
            row.id, {k: int(v) for k, v in statuses.items()}, verified
        )
        self._domains.forget(caller.tenant_id, row.name)
        return domain_service_pb2.VerifyDomainResponse(domain=self._proto(row))

    async def DeleteDomain(
        self, request: domain_service_pb2.DeleteDomainRequest, context: grpc.aio.ServicerContext
    ) -> domain_service_pb2.DeleteDomainResponse:
        caller = await self._core.caller(context, "domains:write")
        name = _name(request.name)
        await self._domains.store.delete(caller.tenant_id, name)
        self._domains.forget(caller.tenant_id, name)
        return domain_service_pb2.DeleteDomainResponse()

"""postwire.v1.DomainService (public): the tenant's sending domains."""

from __future__ import annotations

from postwire.v1 import domain_service_pb2, domain_service_pb2_grpc

from libs.grpcx.auth import Context
from libs.page_tokens import RESOURCES_PAGE_SIZE, PageTokens, page_size
from libs.request_ids import RequestId
from services.policy.local_keys import LocalKeys
from services.policy.manage_domains import DomainView, ManageDomains

P = domain_service_pb2


def _proto(view: DomainView) -> P.Domain:
    row = view.row
    out = P.Domain(
        name=row.name,
        state=P.DomainState.ValueType(view.state),
        records=[
            P.DnsRecord(
                purpose=P.DnsRecordPurpose.ValueType(r.record.purpose),
                type=r.record.type,
                name=r.record.name,
                value=r.record.value,
                required=r.record.required,
                status=P.DnsRecordStatus.ValueType(r.status),
            )
            for r in view.records
        ],
    )
    out.create_time.FromDatetime(row.create_time)
    if row.check_time is not None:
        out.check_time.FromDatetime(row.check_time)
    if row.verify_time is not None:
        out.verify_time.FromDatetime(row.verify_time)
    return out


def _name_position(view: DomainView) -> str:
    return view.row.name


class DomainApi(domain_service_pb2_grpc.DomainServiceServicer):
    def __init__(self, keys: LocalKeys, domains: ManageDomains, pages: PageTokens) -> None:
        self._keys = keys
        self._domains = domains
        self._pages = pages

    async def CreateDomain(self, request: P.CreateDomainRequest, context: Context) -> P.CreateDomainResponse:
        caller = await self._keys.authorize(context, "domains:write")
        answer = await self._domains.create(
            caller.tenant_id,
            request.name,
            RequestId.of(caller.tenant_id, "CreateDomain", request),
            lambda view: P.CreateDomainResponse(domain=_proto(view)).SerializeToString(),
        )
        return P.CreateDomainResponse.FromString(answer)

    async def GetDomain(self, request: P.GetDomainRequest, context: Context) -> P.GetDomainResponse:
        caller = await self._keys.authorize(context, "domains:read")
        return P.GetDomainResponse(domain=_proto(await self._domains.get(caller.tenant_id, request.name)))

    async def ListDomains(self, request: P.ListDomainsRequest, context: Context) -> P.ListDomainsResponse:
        caller = await self._keys.authorize(context, "domains:read")
        size = page_size(request.page_size, default=RESOURCES_PAGE_SIZE)
        cursor = self._pages.cursor(request, caller=caller.tenant_id)
        views = await self._domains.list(caller.tenant_id, after=cursor.after, limit=size + 1)
        page, token = cursor.page(views, size, _name_position)
        return P.ListDomainsResponse(domains=[_proto(v) for v in page], next_page_token=token)

    async def VerifyDomain(self, request: P.VerifyDomainRequest, context: Context) -> P.VerifyDomainResponse:
        caller = await self._keys.authorize(context, "domains:write")
        return P.VerifyDomainResponse(
            domain=_proto(await self._domains.verify(caller.tenant_id, request.name))
        )

    async def DeleteDomain(self, request: P.DeleteDomainRequest, context: Context) -> P.DeleteDomainResponse:
        caller = await self._keys.authorize(context, "domains:write")
        await self._domains.delete(caller.tenant_id, request.name)
        return P.DeleteDomainResponse()

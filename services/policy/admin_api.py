"""postwire.v1.AdminService: tenants, API keys and limits, behind the deployment's admin credential."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from postwire.v1 import admin_service_pb2, admin_service_pb2_grpc

from libs.grpcx.auth import Context, bearer_token
from libs.page_tokens import ADMIN_CALLER, RESOURCES_PAGE_SIZE, PageTokens, page_size
from libs.request_ids import RequestId
from services.policy.admin_credential import AdminCredential
from services.policy.limits import Limits
from services.policy.manage_api_keys import ManageApiKeys
from services.policy.manage_tenants import ManageTenants, TenantSpec
from services.policy.records import KeyRow, TenantRow

P = admin_service_pb2


def _tenant_proto(t: TenantRow) -> P.Tenant:
    out = P.Tenant(
        id=t.id,
        name=t.name,
        sandbox=t.sandbox,
        require_tls=t.require_tls,
        limits=[
            P.StreamLimits(
                stream=lim.stream,
                recipients_per_second=lim.recipients_per_second,
                burst=lim.burst,
                recipients_per_day=lim.recipients_per_day,
                recipients_per_month=lim.recipients_per_month,
            )
            for lim in t.limits
        ],
    )
    out.create_time.FromDatetime(t.create_time)
    return out


def _tenant_spec(t: P.Tenant) -> TenantSpec:
    return TenantSpec(
        id=t.id,
        name=t.name,
        sandbox=t.sandbox,
        require_tls=t.require_tls,
        limits=tuple(
            Limits(
                stream=lim.stream,
                recipients_per_second=lim.recipients_per_second,
                burst=lim.burst,
                recipients_per_day=lim.recipients_per_day,
                recipients_per_month=lim.recipients_per_month,
            )
            for lim in t.limits
        ),
    )


def _key_proto(k: KeyRow) -> P.ApiKey:
    out = P.ApiKey(
        id=k.id, tenant_id=k.tenant_id, prefix=k.prefix, scopes=k.scopes, display_name=k.display_name
    )
    out.create_time.FromDatetime(k.create_time)
    if k.revoke_time is not None:
        out.revoke_time.FromDatetime(k.revoke_time)
    return out


def _created_tenant(t: TenantRow) -> bytes:
    return P.CreateTenantResponse(tenant=_tenant_proto(t)).SerializeToString()


def _created_key(k: KeyRow, secret: str) -> bytes:
    return P.CreateApiKeyResponse(api_key=_key_proto(k), secret=secret).SerializeToString()


class AdminApi(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(
        self, credential: AdminCredential, tenants: ManageTenants, keys: ManageApiKeys, pages: PageTokens
    ) -> None:
        self._credential = credential
        self._tenants = tenants
        self._keys = keys
        self._pages = pages

    def _authorize(self, context: Context) -> None:
        self._credential.check(lambda: bearer_token(context))

    async def CreateTenant(self, request: P.CreateTenantRequest, context: Context) -> P.CreateTenantResponse:
        self._authorize(context)
        answer = await self._tenants.create(
            _tenant_spec(request.tenant), RequestId.of(ADMIN_CALLER, "CreateTenant", request), _created_tenant
        )
        return P.CreateTenantResponse.FromString(answer)

    async def GetTenant(self, request: P.GetTenantRequest, context: Context) -> P.GetTenantResponse:
        self._authorize(context)
        return P.GetTenantResponse(tenant=_tenant_proto(await self._tenants.get(request.tenant_id)))

    async def ListTenants(self, request: P.ListTenantsRequest, context: Context) -> P.ListTenantsResponse:
        self._authorize(context)
        size = page_size(request.page_size, default=RESOURCES_PAGE_SIZE)
        cursor = self._pages.cursor(request, caller=ADMIN_CALLER)
        rows = await self._tenants.list(after=cursor.parse(_time_and_id) or "", limit=size + 1)
        page, token = cursor.page(rows, size, _after)
        return P.ListTenantsResponse(tenants=[_tenant_proto(t) for t in page], next_page_token=token)

    async def UpdateTenant(self, request: P.UpdateTenantRequest, context: Context) -> P.UpdateTenantResponse:
        self._authorize(context)
        updated = await self._tenants.update(_tenant_spec(request.tenant), list(request.update_mask.paths))
        return P.UpdateTenantResponse(tenant=_tenant_proto(updated))

    async def CreateApiKey(self, request: P.CreateApiKeyRequest, context: Context) -> P.CreateApiKeyResponse:
        self._authorize(context)
        answer = await self._keys.create(
            request.tenant_id,
            list(request.scopes),
            request.display_name,
            RequestId.of(ADMIN_CALLER, "CreateApiKey", request),
            _created_key,
        )
        return P.CreateApiKeyResponse.FromString(answer)

    async def ListApiKeys(self, request: P.ListApiKeysRequest, context: Context) -> P.ListApiKeysResponse:
        self._authorize(context)
        size = page_size(request.page_size, default=RESOURCES_PAGE_SIZE)
        cursor = self._pages.cursor(request, caller=ADMIN_CALLER)
        rows = await self._keys.list(
            request.tenant_id,
            show_revoked=request.show_revoked,
            after=cursor.parse(_time_and_id) or "",
            limit=size + 1,
        )
        page, token = cursor.page(rows, size, _after)
        return P.ListApiKeysResponse(api_keys=[_key_proto(k) for k in page], next_page_token=token)

    async def RevokeApiKey(self, request: P.RevokeApiKeyRequest, context: Context) -> P.RevokeApiKeyResponse:
        self._authorize(context)
        return P.RevokeApiKeyResponse(api_key=_key_proto(await self._keys.revoke(request.api_key)))


def _after(row: TenantRow | KeyRow) -> str:
    return f"{row.create_time.isoformat()}|{row.id}"


def _time_and_id(position: str) -> str:
    """An 'iso time|uuid' position, checked before it reaches the query; ValueError otherwise."""
    stamp, _, last_id = position.partition("|")
    datetime.fromisoformat(stamp)
    UUID(last_id)
    return position

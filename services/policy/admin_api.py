"""postwire.v1.AdminService: tenants, API keys and limits, behind the deployment's admin credential."""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import datetime
from uuid import UUID

import grpc
from postwire.v1 import admin_service_pb2, admin_service_pb2_grpc

from libs.errors import InvalidArgument, PermissionDenied, Unauthenticated
from libs.grpcx.auth import bearer_token
from libs.page_tokens import ADMIN_CALLER, RESOURCES_PAGE_SIZE, PageTokens, page_size
from services.policy.api_keys import generate_key, hash_key, key_prefix, scope_violations
from services.policy.core import PolicyCore
from services.policy.limits import Limits, check_limits
from services.policy.store import KeyRow, TenantRow

_log = logging.getLogger(__name__)

MAX_LIMITS = 64
_TENANT_FIELDS = ("name", "sandbox", "require_tls", "limits")


def _tenant_proto(t: TenantRow) -> admin_service_pb2.Tenant:
    out = admin_service_pb2.Tenant(
        id=t.id,
        name=t.name,
        sandbox=t.sandbox,
        require_tls=t.require_tls,
        limits=[
            admin_service_pb2.StreamLimits(
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


def _key_proto(k: KeyRow) -> admin_service_pb2.ApiKey:
    out = admin_service_pb2.ApiKey(
        id=k.id, tenant_id=k.tenant_id, prefix=k.prefix, scopes=k.scopes, display_name=k.display_name
    )
    out.create_time.FromDatetime(k.create_time)
    if k.revoke_time is not None:
        out.revoke_time.FromDatetime(k.revoke_time)
    return out


def _name(value: str, field: str) -> str:
    name = value.strip()
    if not name or len(name) > 128:
        raise InvalidArgument([(field, "1-128 characters are required")])
    return name


def _limits(tenant: admin_service_pb2.Tenant) -> list[Limits]:
    if len(tenant.limits) > MAX_LIMITS:
        raise InvalidArgument([("tenant.limits", f"at most {MAX_LIMITS} entries")])
    limits = [
        Limits(
            stream=lim.stream,
            recipients_per_second=lim.recipients_per_second,
            burst=lim.burst,
            recipients_per_day=lim.recipients_per_day,
            recipients_per_month=lim.recipients_per_month,
        )
        for lim in tenant.limits
    ]
    violations = check_limits(limits)
    if violations:
        raise InvalidArgument(violations)
    return limits


class AdminApi(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, core: PolicyCore, admin_token: str, pages: PageTokens) -> None:
        self._core = core
        self._pages = pages
        # Only a digest is kept, and compared in constant time.
        self._token_digest = hashlib.sha256(admin_token.encode()).digest() if admin_token else b""

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        if not self._token_digest:
            raise Unauthenticated(
                "the admin API is disabled on this deployment (POSTWIRE_ADMIN_TOKEN is not set)"
            )
        token = bearer_token(context)
        if hmac.compare_digest(hashlib.sha256(token.encode()).digest(), self._token_digest):
            return
        if key_prefix(token):
            raise PermissionDenied("API keys cannot call AdminService; use the admin credential")
        raise Unauthenticated("wrong admin credential")

    async def CreateTenant(
        self, request: admin_service_pb2.CreateTenantRequest, context: grpc.aio.ServicerContext
    ) -> admin_service_pb2.CreateTenantResponse:
        self._authorize(context)
        name = _name(request.tenant.name, "tenant.name")
        limits = _limits(request.tenant)
        tenant_id = await self._core.store.create_tenant(
            name, sandbox=request.tenant.sandbox, require_tls=request.tenant.require_tls, limits=limits
        )
        return admin_service_pb2.CreateTenantResponse(
            tenant=_tenant_proto(await self._core.store.get_tenant(tenant_id))
        )

    async def GetTenant(
        self, request: admin_service_pb2.GetTenantRequest, context: grpc.aio.ServicerContext
    ) -> admin_service_pb2.GetTenantResponse:
        self._authorize(context)
        if not request.tenant_id:
            raise InvalidArgument([("tenant_id", "a tenant id is required")])
        return admin_service_pb2.GetTenantResponse(
            tenant=_tenant_proto(await self._core.store.get_tenant(request.tenant_id))
        )

    async def ListTenants(
        self, request: admin_service_pb2.ListTenantsRequest, context: grpc.aio.ServicerContext
    ) -> admin_service_pb2.ListTenantsResponse:
        self._authorize(context)
        size = page_size(request.page_size, default=RESOURCES_PAGE_SIZE)
        cursor = self._pages.cursor(request, caller=ADMIN_CALLER)
        rows = await self._core.store.list_tenants(after=cursor.parse(_time_and_id) or "", limit=size + 1)
        page, token = cursor.page(rows, size, _after)
        return admin_service_pb2.ListTenantsResponse(
            tenants=[_tenant_proto(t) for t in page], next_page_token=token
        )

    async def UpdateTenant(
        self, request: admin_service_pb2.UpdateTenantRequest, context: grpc.aio.ServicerContext
    ) -> admin_service_pb2.UpdateTenantResponse:
        self._authorize(context)
        tenant = request.tenant
        if not tenant.id:
            raise InvalidArgument([("tenant.id", "the id of the tenant to update is required")])
        paths = list(request.update_mask.paths)
        if not paths:
            raise InvalidArgument(
                [("update_mask", f"name the fields to change: {', '.join(_TENANT_FIELDS)}")]
            )
        unknown = [p for p in paths if p not in _TENANT_FIELDS]
        if unknown:
            raise InvalidArgument(
                [
                    ("update_mask", f"'{p}' cannot be updated; writable: {', '.join(_TENANT_FIELDS)}")
                    for p in unknown
                ]
            )
        updated = await self._core.store.update_tenant(
            tenant.id,
            name=_name(tenant.name, "tenant.name") if "name" in paths else None,
            sandbox=tenant.sandbox if "sandbox" in paths else None,
            require_tls=tenant.require_tls if "require_tls" in paths else None,
            limits=_limits(tenant) if "limits" in paths else None,
        )
        self._core.forget_tenant(updated.id)
        return admin_service_pb2.UpdateTenantResponse(tenant=_tenant_proto(updated))

    async def CreateApiKey(
        self, request: admin_service_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> admin_service_pb2.CreateApiKeyResponse:
        self._authorize(context)
        violations = scope_violations(list(request.scopes))
        if not request.tenant_id:
            violations.append(("tenant_id", "a tenant id is required"))
        if len(request.display_name) > 128:
            violations.append(("display_name", "at most 128 characters"))
        if violations:
            raise InvalidArgument(violations)
        new = generate_key()
        row = await self._core.store.create_key(
            request.tenant_id,
            prefix=new.prefix,
            key_hash=hash_key(new.key, self._core.pepper),
            scopes=list(request.scopes),
            display_name=request.display_name,
        )
        # The prefix names the key in logs; the secret never goes there.
        _log.info(
            "API key %s created for tenant %s with scopes %s", row.prefix, row.tenant_id, ",".join(row.scopes)
        )
        return admin_service_pb2.CreateApiKeyResponse(api_key=_key_proto(row), secret=new.key)

    async def ListApiKeys(
        self, request: admin_service_pb2.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> admin_service_pb2.ListApiKeysResponse:
        self._authorize(context)
        if not request.tenant_id:
            raise InvalidArgument([("tenant_id", "a tenant id is required")])
        size = page_size(request.page_size, default=RESOURCES_PAGE_SIZE)
        cursor = self._pages.cursor(request, caller=ADMIN_CALLER)
        rows = await self._core.store.list_keys(
            request.tenant_id,
            show_revoked=request.show_revoked,
            after=cursor.parse(_time_and_id) or "",
            limit=size + 1,
        )
        page, token = cursor.page(rows, size, _after)
        return admin_service_pb2.ListApiKeysResponse(
            api_keys=[_key_proto(k) for k in page], next_page_token=token
        )

    async def RevokeApiKey(
        self, request: admin_service_pb2.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> admin_service_pb2.RevokeApiKeyResponse:
        self._authorize(context)
        if not request.api_key:
            raise InvalidArgument([("api_key", "the key's id or prefix is required")])
        if key_prefix(request.api_key):
            # A whole key pasted by mistake: refuse it rather than look it up by content.
            raise InvalidArgument(
                [("api_key", "give the key's id or prefix (pw_xxxxxxxx), not the key itself")]
            )
        row = await self._core.store.revoke_key(request.api_key)
        _log.info("API key %s of tenant %s revoked", row.prefix, row.tenant_id)
        return admin_service_pb2.RevokeApiKeyResponse(api_key=_key_proto(row))


def _after(row: TenantRow | KeyRow) -> str:
    return f"{row.create_time.isoformat()}|{row.id}"


def _time_and_id(position: str) -> str:
    """An 'iso time|uuid' position, checked before it reaches the query; ValueError otherwise."""
    stamp, _, last_id = position.partition("|")
    datetime.fromisoformat(stamp)
    UUID(last_id)
    return position

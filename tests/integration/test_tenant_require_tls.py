"""Tenant.require_tls through AdminService at the public address, and the column mta_worker reads."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from postwire.v1 import admin_service_pb2, admin_service_pb2_grpc

from tests.conftest import ADMIN_TOKEN
from tests.integration.helpers import bad_request_fields

ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


@pytest.fixture
def admin(edge: grpc.aio.Channel) -> admin_service_pb2_grpc.AdminServiceStub:
    return admin_service_pb2_grpc.AdminServiceStub(edge)


async def _stored_flag(database_url: str, tenant_id: str) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        flag: bool = await conn.fetchval("SELECT require_tls FROM tenants WHERE id = $1::uuid", tenant_id)
        return flag
    finally:
        await conn.close()


async def _create(admin, **tenant: object) -> admin_service_pb2.Tenant:
    created = await admin.CreateTenant(
        admin_service_pb2.CreateTenantRequest(tenant={"name": "tls", **tenant}), metadata=ADMIN
    )
    return created.tenant


async def test_require_tls_is_off_unless_asked_for_and_is_kept_on_create(admin, suite) -> None:
    plain = await _create(admin)
    strict = await _create(admin, require_tls=True)
    assert not plain.require_tls
    assert strict.require_tls
    assert not await _stored_flag(suite.database_url, plain.id)
    assert await _stored_flag(suite.database_url, strict.id)

    got = await admin.GetTenant(admin_service_pb2.GetTenantRequest(tenant_id=strict.id), metadata=ADMIN)
    assert got.tenant == strict

    listed: dict[str, admin_service_pb2.Tenant] = {}
    token = ""
    while True:
        page = await admin.ListTenants(
            admin_service_pb2.ListTenantsRequest(page_size=100, page_token=token), metadata=ADMIN
        )
        listed.update({t.id: t for t in page.tenants})
        token = page.next_page_token
        if not token:
            break
    assert listed[strict.id].require_tls and not listed[plain.id].require_tls


async def test_update_changes_require_tls_only_when_masked(admin, suite) -> None:
    tenant = await _create(admin, sandbox=True, limits=[{"stream": "*", "recipients_per_day": 5}])

    renamed = await admin.UpdateTenant(
        admin_service_pb2.UpdateTenantRequest(
            tenant={"id": tenant.id, "name": "renamed", "require_tls": True}, update_mask={"paths": ["name"]}
        ),
        metadata=ADMIN,
    )
    assert renamed.tenant.name == "renamed" and not renamed.tenant.require_tls

    on = await admin.UpdateTenant(
        admin_service_pb2.UpdateTenantRequest(
            tenant={"id": tenant.id, "require_tls": True}, update_mask={"paths": ["require_tls"]}
        ),
        metadata=ADMIN,
    )
    assert on.tenant.require_tls
    assert (on.tenant.name, on.tenant.sandbox, list(on.tenant.limits)) == (
        "renamed",
        True,
        list(tenant.limits),
    )
    assert await _stored_flag(suite.database_url, tenant.id)

    off = await admin.UpdateTenant(
        admin_service_pb2.UpdateTenantRequest(
            tenant={"id": tenant.id}, update_mask={"paths": ["require_tls"]}
        ),
        metadata=ADMIN,
    )
    assert not off.tenant.require_tls
    assert not await _stored_flag(suite.database_url, tenant.id)


async def test_an_unknown_mask_path_names_require_tls_among_the_writable_fields(admin) -> None:
    tenant = await _create(admin)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.UpdateTenant(
            admin_service_pb2.UpdateTenantRequest(
                tenant={"id": tenant.id, "require_tls": True}, update_mask={"paths": ["requireTls"]}
            ),
            metadata=ADMIN,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(caught.value) == ["update_mask"]
    assert "require_tls" in (caught.value.details() or "")

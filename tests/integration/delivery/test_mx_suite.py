"""The MX-mode suite starts beside the main one and is its own: a tenant made at its edge exists
there and nowhere else."""

from __future__ import annotations

import grpc
import pytest
from postwire.v1 import admin_service_pb2, admin_service_pb2_grpc

from libs.embedded.suite import Suite
from tests.conftest import ADMIN_TOKEN, Tenant

ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


async def _get_tenant(suite: Suite, tenant_id: str) -> admin_service_pb2.GetTenantResponse:
    async with grpc.aio.insecure_channel(suite.ports.addr("edge")) as channel:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        return await stub.GetTenant(
            admin_service_pb2.GetTenantRequest(tenant_id=tenant_id), metadata=ADMIN, timeout=10
        )


async def test_a_tenant_made_at_the_mx_suite_edge_lives_only_in_that_suite(
    mx_suite: Suite, mx_tenant: Tenant, suite: Suite
) -> None:
    assert mx_tenant.api_key
    found = await _get_tenant(mx_suite, mx_tenant.id)
    assert found.tenant.id == mx_tenant.id
    with pytest.raises(grpc.aio.AioRpcError) as elsewhere:
        await _get_tenant(suite, mx_tenant.id)
    assert elsewhere.value.code() == grpc.StatusCode.NOT_FOUND

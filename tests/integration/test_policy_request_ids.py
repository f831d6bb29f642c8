"""AIP-155 request_id on policy's creates, through the public address: a retry gets the first
answer and creates nothing, the same id with another request is ALREADY_EXISTS naming
request_id, and a malformed id is INVALID_ARGUMENT on request_id."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import pytest
from postwire.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    domain_service_pb2,
    domain_service_pb2_grpc,
    suppression_service_pb2,
    suppression_service_pb2_grpc,
)

from tests.conftest import ADMIN_TOKEN, create_tenant
from tests.integration.helpers import bad_request_fields, unique

ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
MANUAL = suppression_service_pb2.SUPPRESSION_REASON_MANUAL


async def _refused(call: Awaitable[Any], code: grpc.StatusCode) -> list[str]:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    assert refused.value.code() == code, refused.value.details()
    return bad_request_fields(refused.value)


async def _same_id_contract(
    create: Callable[[str, str], Awaitable[Any]], count: Callable[[], Awaitable[int]]
) -> Any:
    """create(request_id, variant) twice with one id, then with another payload, then a bad id."""
    rid = str(uuid.uuid4())
    before = await count()
    first = await create(rid, "a")
    again = await create(rid, "a")
    assert again == first
    assert await count() == before + 1
    assert await _refused(create(rid, "b"), grpc.StatusCode.ALREADY_EXISTS) == ["request_id"]
    assert await _refused(create("bad\nid", "a"), grpc.StatusCode.INVALID_ARGUMENT) == ["request_id"]
    assert await count() == before + 1
    return first


@pytest.fixture
def admin(edge: grpc.aio.Channel) -> admin_service_pb2_grpc.AdminServiceStub:
    return admin_service_pb2_grpc.AdminServiceStub(edge)


async def test_create_tenant_with_a_request_id_happens_once(admin) -> None:
    name = f"rid-{uuid.uuid4().hex[:8]}"

    async def create(rid: str, variant: str) -> admin_service_pb2.CreateTenantResponse:
        return await admin.CreateTenant(
            admin_service_pb2.CreateTenantRequest(tenant={"name": f"{name}-{variant}"}, request_id=rid),
            metadata=ADMIN,
        )

    async def count() -> int:
        found, token = 0, ""
        while True:
            page = await admin.ListTenants(
                admin_service_pb2.ListTenantsRequest(page_size=1000, page_token=token), metadata=ADMIN
            )
            found += sum(t.name.startswith(name) for t in page.tenants)
            token = page.next_page_token
            if not token:
                return found

    first = await _same_id_contract(create, count)
    assert first.tenant.name == f"{name}-a"


async def test_create_api_key_with_a_request_id_answers_the_same_secret_once_stored_sealed(
    admin, suite
) -> None:
    tenant = await admin.CreateTenant(
        admin_service_pb2.CreateTenantRequest(tenant={"name": "keys"}), metadata=ADMIN
    )
    tenant_id = tenant.tenant.id

    async def create(rid: str, variant: str) -> admin_service_pb2.CreateApiKeyResponse:
        return await admin.CreateApiKey(
            admin_service_pb2.CreateApiKeyRequest(
                tenant_id=tenant_id, scopes=["send"], display_name=variant, request_id=rid
            ),
            metadata=ADMIN,
        )

    async def count() -> int:
        listed = await admin.ListApiKeys(
            admin_service_pb2.ListApiKeysRequest(tenant_id=tenant_id, show_revoked=True), metadata=ADMIN
        )
        return len(listed.api_keys)

    first = await _same_id_contract(create, count)
    assert first.secret.startswith(first.api_key.prefix + "_")
    # The remembered answer carries the key: no row holds its plaintext.
    conn = await asyncpg.connect(suite.database_url)
    try:
        stored = await conn.fetch("SELECT response FROM request_ids WHERE method = 'CreateApiKey'")
    finally:
        await conn.close()
    secret = first.secret.split("_", 2)[2].encode()
    assert stored and not any(secret in bytes(r["response"] or b"") for r in stored)


async def test_create_domain_with_a_request_id_happens_once(edge, tenant) -> None:
    stub = domain_service_pb2_grpc.DomainServiceStub(edge)
    base = f"rid-{uuid.uuid4().hex[:8]}.example.org"

    async def create(rid: str, variant: str) -> domain_service_pb2.CreateDomainResponse:
        return await stub.CreateDomain(
            domain_service_pb2.CreateDomainRequest(name=f"{variant}.{base}", request_id=rid),
            metadata=tenant.metadata,
        )

    async def count() -> int:
        listed = await stub.ListDomains(domain_service_pb2.ListDomainsRequest(), metadata=tenant.metadata)
        return sum(d.name.endswith(base) for d in listed.domains)

    first = await _same_id_contract(create, count)
    assert first.domain.name == f"a.{base}"
    assert first.domain.state == domain_service_pb2.DOMAIN_STATE_PENDING


async def test_batch_create_suppressions_with_a_request_id_happens_once(edge, tenant) -> None:
    stub = suppression_service_pb2_grpc.SuppressionServiceStub(edge)
    addresses = {"a": unique("a"), "b": unique("b")}

    async def create(rid: str, variant: str) -> suppression_service_pb2.BatchCreateSuppressionsResponse:
        return await stub.BatchCreateSuppressions(
            suppression_service_pb2.BatchCreateSuppressionsRequest(
                suppressions=[{"address": addresses[variant], "reason": MANUAL}], request_id=rid
            ),
            metadata=tenant.metadata,
        )

    async def count() -> int:
        listed = await stub.ListSuppressions(
            suppression_service_pb2.ListSuppressionsRequest(), metadata=tenant.metadata
        )
        return len(listed.suppressions)

    first = await _same_id_contract(create, count)
    assert [s.address for s in first.suppressions] == [addresses["a"]]


async def test_one_request_id_is_per_tenant(edge, tenant, suite) -> None:
    """Another tenant using the same id creates its own domain, not a replay of the first."""
    other = await create_tenant(suite)
    stub = domain_service_pb2_grpc.DomainServiceStub(edge)
    rid = str(uuid.uuid4())
    name = f"shared-{uuid.uuid4().hex[:8]}.example.org"
    mine = await stub.CreateDomain(
        domain_service_pb2.CreateDomainRequest(name="a." + name, request_id=rid), metadata=tenant.metadata
    )
    theirs = await stub.CreateDomain(
        domain_service_pb2.CreateDomainRequest(name="b." + name, request_id=rid), metadata=other.metadata
    )
    assert (mine.domain.name, theirs.domain.name) == ("a." + name, "b." + name)

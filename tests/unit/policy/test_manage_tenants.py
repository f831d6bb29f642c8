"""Tenants: validated before the store is touched; an update lets this replica's caches go only
after it is stored."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from libs.errors import InvalidArgument
from libs.page_tokens import ADMIN_CALLER
from libs.request_ids import RequestId
from services.policy.limits import Limits
from services.policy.manage_tenants import ManageTenants, TenantSpec
from services.policy.records import TenantRow
from tests.unit.policy.fakes import OnceStore

TENANT = "7d1f3c1e-0000-4000-8000-000000000001"


class Tenants(OnceStore):
    async def create_tenant(
        self, name: str, *, sandbox: bool, require_tls: bool, limits: Sequence[Limits]
    ) -> str:
        self.log.append("create")
        return TENANT

    async def get_tenant(self, tenant_id: str) -> TenantRow:
        return TenantRow(tenant_id, "team", False, False, datetime.now(UTC), ())

    async def list_tenants(self, *, after: str, limit: int) -> list[TenantRow]:
        return []

    async def update_tenant(
        self,
        tenant_id: str,
        *,
        name: str | None,
        sandbox: bool | None,
        require_tls: bool | None,
        limits: Sequence[Limits] | None,
    ) -> TenantRow:
        self.log.append(f"update sandbox={sandbox} name={name}")
        return TenantRow(tenant_id, "team", bool(sandbox), False, datetime.now(UTC), ())


def _manage() -> tuple[ManageTenants, Tenants]:
    store = Tenants()
    return ManageTenants(store, changed=lambda tenant_id: store.log.append(f"forget {tenant_id}")), store


def _answer(row: TenantRow) -> bytes:
    return row.id.encode()


async def test_a_bad_tenant_is_refused_before_the_store_is_touched() -> None:
    manage, store = _manage()
    spec = TenantSpec(name=" ", limits=(Limits("*", burst=5),))

    with pytest.raises(InvalidArgument) as refused:
        await manage.create(spec, None, _answer)

    assert refused.value.violations[0][0] == "tenant.name"
    assert store.log == []


async def test_a_retried_request_id_creates_one_tenant() -> None:
    manage, store = _manage()
    rid = RequestId(ADMIN_CALLER, "CreateTenant", "r-1", b"fp")

    first = await manage.create(TenantSpec(name="team"), rid, _answer)
    again = await manage.create(TenantSpec(name="team"), rid, _answer)

    assert first == again == TENANT.encode()
    assert store.log == ["create", "replay"]


async def test_an_update_writes_only_the_masked_fields_then_forgets_the_cache() -> None:
    manage, store = _manage()

    await manage.update(TenantSpec(id=TENANT, name="renamed", sandbox=True), ["sandbox"])

    assert store.log == ["update sandbox=True name=None", f"forget {TENANT}"]


async def test_an_unknown_mask_path_is_refused_before_the_store_is_touched() -> None:
    manage, store = _manage()

    with pytest.raises(InvalidArgument) as refused:
        await manage.update(TenantSpec(id=TENANT, name="x"), ["name", "id"])

    assert [f for f, _ in refused.value.violations] == ["update_mask"]
    assert store.log == []

"""Use cases of AdminService for tenants: validate, store, and let cached settings go.
No I/O of its own: the store is a port."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from libs.errors import InvalidArgument
from libs.request_ids import RequestId
from services.policy.limits import Limits, check_limits
from services.policy.records import TenantRow

__all__ = ["MAX_LIMITS", "TENANT_FIELDS", "ManageTenants", "TenantSpec", "TenantStore"]

MAX_LIMITS = 64
TENANT_FIELDS = ("name", "sandbox", "require_tls", "limits")


class TenantStore(Protocol):
    async def create_tenant(
        self, name: str, *, sandbox: bool, require_tls: bool, limits: Sequence[Limits]
    ) -> str: ...
    async def get_tenant(self, tenant_id: str) -> TenantRow: ...
    async def list_tenants(self, *, after: str, limit: int) -> list[TenantRow]: ...
    async def update_tenant(
        self,
        tenant_id: str,
        *,
        name: str | None,
        sandbox: bool | None,
        require_tls: bool | None,
        limits: Sequence[Limits] | None,
    ) -> TenantRow: ...
    async def once(
        self, rid: RequestId | None, create: Callable[[TenantStore], Awaitable[bytes]]
    ) -> bytes: ...


@dataclass(frozen=True, slots=True)
class TenantSpec:
    """A tenant as the caller wrote it; `id` only matters to updates."""

    name: str
    sandbox: bool = False
    require_tls: bool = False
    limits: tuple[Limits, ...] = ()
    id: str = ""


def _name(value: str) -> str:
    name = value.strip()
    if not name or len(name) > 128:
        raise InvalidArgument([("tenant.name", "1-128 characters are required")])
    return name


def _limits(limits: Sequence[Limits]) -> list[Limits]:
    if len(limits) > MAX_LIMITS:
        raise InvalidArgument([("tenant.limits", f"at most {MAX_LIMITS} entries")])
    violations = check_limits(limits)
    if violations:
        raise InvalidArgument(violations)
    return list(limits)


class ManageTenants:
    def __init__(self, store: TenantStore, *, changed: Callable[[str], None]) -> None:
        self._store = store
        # This replica applies a tenant change (limits, sandbox) at once; the others within the
        # cache time.
        self._changed = changed

    async def create(
        self, spec: TenantSpec, rid: RequestId | None, answer: Callable[[TenantRow], bytes]
    ) -> bytes:
        """The serialized answer (`answer` of the new tenant), or the first answer for `rid`."""
        name = _name(spec.name)
        limits = _limits(spec.limits)

        async def create(store: TenantStore) -> bytes:
            tenant_id = await store.create_tenant(
                name, sandbox=spec.sandbox, require_tls=spec.require_tls, limits=limits
            )
            return answer(await store.get_tenant(tenant_id))

        return await self._store.once(rid, create)

    async def get(self, tenant_id: str) -> TenantRow:
        if not tenant_id:
            raise InvalidArgument([("tenant_id", "a tenant id is required")])
        return await self._store.get_tenant(tenant_id)

    async def list(self, *, after: str, limit: int) -> list[TenantRow]:
        return await self._store.list_tenants(after=after, limit=limit)

    async def update(self, spec: TenantSpec, paths: Sequence[str]) -> TenantRow:
        if not spec.id:
            raise InvalidArgument([("tenant.id", "the id of the tenant to update is required")])
        if not paths:
            raise InvalidArgument([("update_mask", f"name the fields to change: {', '.join(TENANT_FIELDS)}")])
        unknown = [p for p in paths if p not in TENANT_FIELDS]
        if unknown:
            raise InvalidArgument(
                [
                    ("update_mask", f"'{p}' cannot be updated; writable: {', '.join(TENANT_FIELDS)}")
                    for p in unknown
                ]
            )
        updated = await self._store.update_tenant(
            spec.id,
            name=_name(spec.name) if "name" in paths else None,
            sandbox=spec.sandbox if "sandbox" in paths else None,
            require_tls=spec.require_tls if "require_tls" in paths else None,
            limits=_limits(spec.limits) if "limits" in paths else None,
        )
        self._changed(updated.id)
        return updated

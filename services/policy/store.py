"""PostgreSQL access for tenants, API keys and limits."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import asyncpg

from libs.errors import NotFound
from libs.request_id_store import Connection
from libs.request_ids import RequestId
from services.policy.db import Db, run_once, transaction
from services.policy.ledger import Charge, Ledger, QuotaKey, RateKey, quota_keys, rate_keys
from services.policy.limits import Limits, Refusal
from services.policy.records import KeyRecord, KeyRow, TenantRow

__all__ = ["PolicyStore"]


def _same(answer: bytes) -> bytes:
    return answer


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _returned(row: asyncpg.Record | None) -> asyncpg.Record:
    """The row an INSERT … RETURNING gave back; there always is one."""
    if row is None:
        raise RuntimeError("INSERT … RETURNING returned no row")
    return row


def _key_row(row: asyncpg.Record) -> KeyRow:
    return KeyRow(
        id=str(row["id"]),
        tenant_id=str(row["tenant_id"]),
        prefix=row["prefix"],
        scopes=tuple(row["scopes"]),
        display_name=row["display_name"],
        create_time=row["create_time"],
        revoke_time=row["revoke_time"],
    )


_KEY_COLUMNS = "id, tenant_id, prefix, scopes, display_name, create_time, revoke_time"


class PolicyStore:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def once(
        self,
        rid: RequestId | None,
        create: Callable[[PolicyStore], Awaitable[bytes]],
        *,
        seal: Callable[[bytes], bytes] = _same,
        unseal: Callable[[bytes], bytes] = _same,
    ) -> bytes:
        """`create` on a store bound to one transaction that also claims `rid`."""
        return await run_once(self._db, rid, lambda conn: create(PolicyStore(conn)), seal=seal, unseal=unseal)

    async def find_key(self, key_hash: bytes) -> KeyRecord | None:
        row = await self._db.fetchrow(
            "SELECT k.tenant_id, k.scopes, k.prefix, t.sandbox FROM api_keys k"
            " JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = $1 AND k.revoke_time IS NULL",
            key_hash,
        )
        if row is None:
            return None
        return KeyRecord(str(row["tenant_id"]), tuple(row["scopes"]), row["prefix"], row["sandbox"])

    async def create_tenant(
        self,
        name: str,
        *,
        sandbox: bool = False,
        require_tls: bool = False,
        limits: Sequence[Limits] = (),
    ) -> str:
        """A tenant with its limits; keys are added with create_key."""
        tenant_id = uuid.uuid4()
        async with transaction(self._db) as conn:
            await conn.execute(
                "INSERT INTO tenants (id, name, sandbox, require_tls) VALUES ($1, $2, $3, $4)",
                tenant_id,
                name,
                sandbox,
                require_tls,
            )
            await _write_limits(conn, tenant_id, limits)
        return str(tenant_id)

    async def tenant_sandbox(self, tenant_id: str) -> bool | None:
        """The tenant's sandbox flag, or None if there is no such tenant."""
        tid = _uuid(tenant_id)
        if tid is None:
            return None
        found: bool | None = await self._db.fetchval("SELECT sandbox FROM tenants WHERE id = $1", tid)
        return found

    async def get_tenant(self, tenant_id: str) -> TenantRow:
        tid = _uuid(tenant_id)
        row = None
        if tid is not None:
            row = await self._db.fetchrow(
                "SELECT id, name, sandbox, require_tls, create_time FROM tenants WHERE id = $1", tid
            )
        if row is None:
            raise NotFound(f"tenant '{tenant_id}' not found")
        return TenantRow(
            id=str(row["id"]),
            name=row["name"],
            sandbox=row["sandbox"],
            require_tls=row["require_tls"],
            create_time=row["create_time"],
            limits=tuple(await self.limits(str(row["id"]))),
        )

    async def list_tenants(self, *, after: str, limit: int) -> list[TenantRow]:
        """Oldest first; `after` is the previous page's last (create_time, id) as 'iso|id'.
        Two queries per page, however many tenants are on it."""
        stamp, _, last_id = after.partition("|")
        rows = await self._db.fetch(
            "SELECT id, name, sandbox, require_tls, create_time FROM tenants"
            " WHERE $1::timestamptz IS NULL OR (create_time, id) > ($1::timestamptz, $2::uuid)"
            " ORDER BY create_time, id LIMIT $3",
            datetime.fromisoformat(stamp) if stamp else None,
            uuid.UUID(last_id) if last_id else None,
            limit,
        )
        limits: dict[uuid.UUID, list[Limits]] = {r["id"]: [] for r in rows}
        for lim in await self._db.fetch(
            "SELECT tenant_id, stream, recipients_per_second, burst, recipients_per_day, recipients_per_month"
            " FROM tenant_limits WHERE tenant_id = ANY($1::uuid[]) ORDER BY tenant_id, stream",
            list(limits),
        ):
            limits[lim["tenant_id"]].append(
                Limits(**{k: v for k, v in dict(lim).items() if k != "tenant_id"})
            )
        return [
            TenantRow(
                id=str(r["id"]),
                name=r["name"],
                sandbox=r["sandbox"],
                require_tls=r["require_tls"],
                create_time=r["create_time"],
                limits=tuple(limits[r["id"]]),
            )
            for r in rows
        ]

    async def update_tenant(
        self,
        tenant_id: str,
        *,
        name: str | None = None,
        sandbox: bool | None = None,
        require_tls: bool | None = None,
        limits: Sequence[Limits] | None = None,
    ) -> TenantRow:
        tid = _uuid(tenant_id)
        async with transaction(self._db) as conn:
            found = tid is not None and await conn.fetchval(
                "UPDATE tenants SET name = COALESCE($2, name), sandbox = COALESCE($3, sandbox),"
                " require_tls = COALESCE($4, require_tls) WHERE id = $1 RETURNING true",
                tid,
                name,
                sandbox,
                require_tls,
            )
            if tid is None or not found:
                raise NotFound(f"tenant '{tenant_id}' not found")
            if limits is not None:
                await conn.execute("DELETE FROM tenant_limits WHERE tenant_id = $1", tid)
                await _write_limits(conn, tid, limits)
        return await self.get_tenant(tenant_id)

    async def limits(self, tenant_id: str) -> list[Limits]:
        rows = await self._db.fetch(
            "SELECT stream, recipients_per_second, burst, recipients_per_day, recipients_per_month"
            " FROM tenant_limits WHERE tenant_id = $1 ORDER BY stream",
            uuid.UUID(tenant_id),
        )
        return [Limits(**dict(r)) for r in rows]

    async def create_key(
        self, tenant_id: str, *, prefix: str, key_hash: bytes, scopes: Sequence[str], display_name: str
    ) -> KeyRow:
        tid = _uuid(tenant_id)
        async with transaction(self._db) as conn:
            exists = tid is not None and await conn.fetchval("SELECT true FROM tenants WHERE id = $1", tid)
            if not exists:
                raise NotFound(f"tenant '{tenant_id}' not found")
            row = await conn.fetchrow(
                "INSERT INTO api_keys (id, tenant_id, prefix, key_hash, scopes, display_name)"
                f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_KEY_COLUMNS}",
                uuid.uuid4(),
                tid,
                prefix,
                key_hash,
                list(scopes),
                display_name,
            )
        return _key_row(_returned(row))

    async def list_keys(self, tenant_id: str, *, show_revoked: bool, after: str, limit: int) -> list[KeyRow]:
        """Newest first; `after` is the previous page's last (create_time, id) as 'iso|id'."""
        tid = _uuid(tenant_id)
        if tid is None or not await self._db.fetchval("SELECT true FROM tenants WHERE id = $1", tid):
            raise NotFound(f"tenant '{tenant_id}' not found")
        stamp, _, last_id = after.partition("|")
        rows = await self._db.fetch(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND ($2 OR revoke_time IS NULL)"
            " AND ($3::timestamptz IS NULL OR (create_time, id) < ($3::timestamptz, $4::uuid))"
            " ORDER BY create_time DESC, id DESC LIMIT $5",
            tid,
            show_revoked,
            datetime.fromisoformat(stamp) if stamp else None,
            uuid.UUID(last_id) if last_id else None,
            limit,
        )
        return [_key_row(r) for r in rows]

    async def revoke_key(self, id_or_prefix: str) -> KeyRow:
        row = await self._db.fetchrow(
            "UPDATE api_keys SET revoke_time = COALESCE(revoke_time, now())"
            f" WHERE id = $1 OR ($1 IS NULL AND prefix = $2) RETURNING {_KEY_COLUMNS}",
            _uuid(id_or_prefix),
            id_or_prefix,
        )
        if row is None:
            raise NotFound(f"API key '{id_or_prefix}' not found")
        return _key_row(row)

    async def consume_many(self, sends: Sequence[tuple[str, Sequence[Charge]]]) -> list[Refusal | None]:
        """Charge each send (tenant id, charges) all or none, in the order given, in one transaction.

        Every row the call can touch is locked first, in one sorted order whichever replica asks
        (a missing row is inserted by the same statement), so concurrent calls are decided one
        after the other against the same state and never deadlock; the arithmetic then runs here
        (services/policy/ledger.py) and what changed is written back before the commit.
        """
        # Keys as PostgreSQL spells them back.
        sends = [(str(uuid.UUID(tenant_id)), charges) for tenant_id, charges in sends]
        rate = rate_keys(sends)
        quota = quota_keys(sends)
        if not rate and not quota:
            return [None] * len(sends)
        async with transaction(self._db) as conn:
            ledger = await _locked(conn, rate, quota)
            refusals = [ledger.charge(tenant_id, charges) for tenant_id, charges in sends]
            await _write_back(conn, ledger)
        return refusals


async def _write_limits(conn: Connection, tenant_id: uuid.UUID, limits: Sequence[Limits]) -> None:
    await conn.executemany(
        "INSERT INTO tenant_limits (tenant_id, stream, recipients_per_second, burst, recipients_per_day,"
        " recipients_per_month) VALUES ($1, $2, $3, $4, $5, $6)",
        [
            (
                tenant_id,
                lim.stream,
                lim.recipients_per_second,
                lim.burst,
                lim.recipients_per_day,
                lim.recipients_per_month,
            )
            for lim in limits
        ],
    )


# The UTC day or month of now() that a quota row of period k.period counts.
_PERIOD_START = (
    "CASE k.period WHEN 'day' THEN (now() AT TIME ZONE 'UTC')::date"
    " ELSE date_trunc('month', now() AT TIME ZONE 'UTC')::date END"
)


async def _locked(conn: Connection, rate: Sequence[RateKey], quota: Sequence[QuotaKey]) -> Ledger:
    """The rows of `rate` and `quota`, locked in that order: a no-op upsert inserts a missing row
    and locks an existing one, row by row in the order of its input."""
    now: datetime | None = None
    tats: dict[RateKey, datetime] = {}
    used: dict[QuotaKey, int] = {}
    if rate:
        rows = await conn.fetch(
            "INSERT INTO rate_state (tenant_id, stream, tat)"
            " SELECT k.tenant_id, k.stream, now() FROM unnest($1::uuid[], $2::text[]) AS k(tenant_id, stream)"
            " ON CONFLICT (tenant_id, stream) DO UPDATE SET tat = rate_state.tat"
            " RETURNING tenant_id, stream, tat, now() AS now",
            *_arrays(rate, 2),
        )
        tats = {(str(r["tenant_id"]), r["stream"]): r["tat"] for r in rows}
        now = rows[0]["now"]
    if quota:
        rows = await conn.fetch(
            "INSERT INTO quota_usage (tenant_id, stream, period, period_start, used)"
            f" SELECT k.tenant_id, k.stream, k.period, {_PERIOD_START}, 0"
            " FROM unnest($1::uuid[], $2::text[], $3::text[]) AS k(tenant_id, stream, period)"
            " ON CONFLICT (tenant_id, stream, period, period_start) DO UPDATE SET used = quota_usage.used"
            " RETURNING tenant_id, stream, period, used, now() AS now",
            *_arrays(quota, 3),
        )
        used = {(str(r["tenant_id"]), r["stream"], r["period"]): r["used"] for r in rows}
        now = rows[0]["now"]
    if now is None:
        raise RuntimeError("nothing to lock")
    return Ledger(now, tats, used)


async def _write_back(conn: Connection, ledger: Ledger) -> None:
    """What the ledger's charges changed, in one statement (the rows are locked already)."""
    if not ledger.changed_tats and not ledger.changed_used:
        return
    rate = sorted(ledger.changed_tats)
    quota = sorted(ledger.changed_used)
    await conn.execute(
        "WITH r AS (UPDATE rate_state s SET tat = k.tat"
        " FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS k(tenant_id, stream, tat)"
        " WHERE s.tenant_id = k.tenant_id AND s.stream = k.stream),"
        " q AS (UPDATE quota_usage s SET used = k.used"
        " FROM unnest($4::uuid[], $5::text[], $6::text[], $7::bigint[]) AS k(tenant_id, stream, period, used)"
        " WHERE s.tenant_id = k.tenant_id AND s.stream = k.stream AND s.period = k.period"
        f" AND s.period_start = {_PERIOD_START})"
        " SELECT 1",
        *_arrays(rate, 2),
        [ledger.tats[k] for k in rate],
        *_arrays(quota, 3),
        [ledger.used[k] for k in quota],
    )


def _arrays(keys: Sequence[tuple[str, ...]], width: int) -> list[list[object]]:
    """Keys as one array per column for unnest(), the tenant ids as UUIDs."""
    columns: list[list[object]] = [[uuid.UUID(k[0]) for k in keys]]
    return columns + [[k[j] for k in keys] for j in range(1, width)]

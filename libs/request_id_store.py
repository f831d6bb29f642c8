"""The request_ids table (migration 0018): how a Create remembers its first answer; see
libs/request_ids.py for the semantics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from libs.errors import AlreadyExists
from libs.request_ids import RequestId

__all__ = ["claim", "once", "remember"]

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


def _same(answer: bytes) -> bytes:
    return answer


async def claim(conn: Connection, rid: RequestId) -> bytes | None:
    """Within a transaction: None when this is the id's first use (the row is now ours until
    commit), else the first call's stored answer."""
    inserted = await conn.fetchval(
        "INSERT INTO request_ids (owner, method, request_id, fingerprint) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT DO NOTHING RETURNING true",
        rid.owner,
        rid.method,
        rid.value,
        rid.fingerprint,
    )
    if inserted:
        return None
    row = await conn.fetchrow(
        "SELECT fingerprint, response FROM request_ids WHERE owner = $1 AND method = $2 AND request_id = $3",
        rid.owner,
        rid.method,
        rid.value,
    )
    if row is None or row["response"] is None or bytes(row["fingerprint"]) != rid.fingerprint:
        raise AlreadyExists(
            "this request_id was already used with a different request", field="request_id"
        )
    return bytes(row["response"])


async def remember(conn: Connection, rid: RequestId, response: bytes) -> None:
    await conn.execute(
        "UPDATE request_ids SET response = $4 WHERE owner = $1 AND method = $2 AND request_id = $3",
        rid.owner,
        rid.method,
        rid.value,
        response,
    )


async def once(
    conn: Connection,
    rid: RequestId | None,
    create: Callable[[], Awaitable[bytes]],
    *,
    seal: Callable[[bytes], bytes] = _same,
    unseal: Callable[[bytes], bytes] = _same,
) -> bytes:
    """Run `create` (which writes through `conn`) in one transaction unless `rid` already has an
    answer; either way return the serialized response. `seal`/`unseal` protect answers that carry
    a secret at rest."""
    async with conn.transaction():
        if rid is not None:
            prior = await claim(conn, rid)
            if prior is not None:
                return unseal(prior)
        answer = await create()
        if rid is not None:
            await remember(conn, rid, seal(answer))
        return answer

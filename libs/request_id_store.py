"""The request_ids table (migration 0018): how a Create remembers its first answer; see
libs/request_ids.py for the semantics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg

from libs.errors import AlreadyExists
from libs.request_ids import RequestId

__all__ = ["KEEP", "answered", "claim", "once", "remember"]

# How long an answer is remembered (PRODUCT.md: idempotency keys kept at least 24 hours).
KEEP = timedelta(days=7)
# Rows past KEEP that one create clears for its owner: creates are rare management calls, so a
# small, bounded clean-up on each is enough to keep the table from growing without a sweeper.
_FORGET_AT_MOST = 100

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


def _same(answer: bytes) -> bytes:
    return answer


async def claim(conn: Connection, rid: RequestId) -> bytes | None:
    """Within a transaction: None when this is the id's first use (the row is now ours until
    commit), else the first call's stored answer."""
    await conn.execute(
        "DELETE FROM request_ids WHERE ctid = ANY(ARRAY(SELECT ctid FROM request_ids"
        " WHERE owner = $1 AND create_time < now() - $2::interval LIMIT $3))",
        rid.owner,
        KEEP,
        _FORGET_AT_MOST,
    )
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
    prior = await answered(conn, rid)
    if prior is None:  # the row went away (cleared) between the insert and the read
        raise _used_otherwise()
    return prior


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


async def answered(
    conn: Connection | asyncpg.Pool, rid: RequestId, *, unseal: Callable[[bytes], bytes] = _same
) -> bytes | None:
    """The id's answer when a call with it has committed, read without claiming it, so a Create
    can answer a retry before re-running checks whose outcome may have changed since; None when
    it has none (`once` still settles races). ALREADY_EXISTS when the id came with another request."""
    row = await conn.fetchrow(
        "SELECT fingerprint, response FROM request_ids WHERE owner = $1 AND method = $2 AND request_id = $3",
        rid.owner,
        rid.method,
        rid.value,
    )
    if row is None or row["response"] is None:
        return None
    if bytes(row["fingerprint"]) != rid.fingerprint:
        raise _used_otherwise()
    return unseal(bytes(row["response"]))


def _used_otherwise() -> AlreadyExists:
    return AlreadyExists("this request_id was already used with a different request", field="request_id")

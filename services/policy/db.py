"""What the policy stores share: a store runs on the pool, or — inside a create that remembers
its request_id — on that create's one connection, so the resource and the claim commit together."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg

from libs.request_id_store import Connection, once
from libs.request_ids import RequestId

__all__ = ["Db", "run_once", "transaction"]

Db = asyncpg.Pool | Connection


def _same(answer: bytes) -> bytes:
    return answer


@asynccontextmanager
async def transaction(db: Db) -> AsyncIterator[Connection]:
    """A transaction on a pooled connection, or a savepoint within the connection's own."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            yield conn
    else:
        async with db.transaction():
            yield db


async def run_once(
    db: Db,
    rid: RequestId | None,
    create: Callable[[Connection], Awaitable[bytes]],
    *,
    seal: Callable[[bytes], bytes] = _same,
    unseal: Callable[[bytes], bytes] = _same,
) -> bytes:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await once(conn, rid, lambda: create(conn), seal=seal, unseal=unseal)
    return await once(db, rid, lambda: create(db), seal=seal, unseal=unseal)

"""libs.db.connect_pool: releases skip asyncpg's reset query, and PgBouncer mode (no statement
cache) works."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from libs.db import connect_pool
from libs.errors import Unavailable
from libs.grpcx.status import status_for


@pytest.fixture
async def single_connection_pool(suite) -> AsyncIterator[asyncpg.Pool]:
    pool = await connect_pool(suite.database_url, min_size=1, max_size=1)
    yield pool
    await pool.close()


async def test_release_sends_no_reset_query(single_connection_pool: asyncpg.Pool) -> None:
    # RESET ALL would put application_name back; no reset means one round trip less per release.
    async with single_connection_pool.acquire() as conn:
        await conn.execute("SELECT set_config('application_name', 'kept-by-test', false)")
    async with single_connection_pool.acquire() as conn:
        assert await conn.fetchval("SHOW application_name") == "kept-by-test"


async def test_release_still_rolls_back_an_abandoned_transaction(single_connection_pool: asyncpg.Pool) -> None:
    async with single_connection_pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("CREATE TEMP TABLE abandoned (x int)")
    async with single_connection_pool.acquire() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT to_regclass('pg_temp.abandoned')") is None


async def test_statement_cache_zero_runs_repeated_statements(suite) -> None:
    pool = await connect_pool(suite.database_url, min_size=1, max_size=1, statement_cache_size=0)
    try:
        for n in range(3):
            assert await pool.fetchval("SELECT $1::int + 1", n) == n + 1
        async with pool.acquire() as conn:
            # Nothing named stays prepared on the server: what PgBouncer's transaction mode needs.
            assert await conn.fetchval("SELECT count(*) FROM pg_prepared_statements") == 0
    finally:
        await pool.close()


async def test_a_pool_with_no_free_connection_answers_unavailable_with_retry_info_in_bounded_time(suite) -> None:
    pool = await connect_pool(suite.database_url, min_size=1, max_size=1, acquire_timeout=0.2)
    try:
        async with pool.acquire():
            # Both shapes callers use: an explicit acquire and the pool's own query helpers.
            with pytest.raises(Unavailable) as refused:
                async with pool.acquire():
                    pass
            with pytest.raises(Unavailable):
                await pool.fetchval("SELECT 1")
        status = status_for(refused.value)
        assert status.code == grpc.StatusCode.UNAVAILABLE
        retry = [d for d in rpc_status.from_call(_Trailers(status)).details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]  # type: ignore[arg-type]
        assert retry, "UNAVAILABLE without RetryInfo"
        # The connection is back: the pool serves again.
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


class _Trailers:
    """Just enough of a grpc.Call for rpc_status.from_call."""

    def __init__(self, status: grpc.Status) -> None:
        self._status = status

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return tuple(self._status.trailing_metadata)

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details

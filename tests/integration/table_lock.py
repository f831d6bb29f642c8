"""Hold a table lock for a moment, so calls made meanwhile are all waiting at the same step: what
a busy server looks like, without depending on how busy the test machine happens to be."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg

__all__ = ["until_blocked", "while_held", "while_locked"]

T = TypeVar("T")


async def while_locked(
    database_url: str, table: str, start: Callable[[], Sequence[Awaitable[T]]], *, seconds: float = 1.0
) -> list[T]:
    """Call `start` once `table` is locked against reads and writes (ACCESS EXCLUSIVE), release
    it after `seconds`, and return the answers of the calls it started, in order (the first
    error raised)."""
    # A test-controlled constant, never input.
    answers = await while_held(
        database_url, f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE", start=start, seconds=seconds
    )
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    return answers  # type: ignore[return-value]  # no errors left among them


async def while_held(
    database_url: str,
    statement: str,
    *args: object,
    start: Callable[[], Sequence[Awaitable[T]]],
    seconds: float = 1.0,
) -> list[T | BaseException]:
    """Run `statement` in a transaction, call `start` once it holds its locks, commit `seconds`
    after the first call waits on them, and return the calls' answers or errors, in order.

    A starter rather than the calls themselves: a grpc.aio call runs from the moment it is
    created, so calls made before the lock is taken race it, and on a busy machine some are
    answered before it is held (which made a limits test fail in CI)."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute(statement, *args)
            answers = asyncio.gather(*start(), return_exceptions=True)
            # The hold counts from the first call waiting on the lock, not from the calls' start:
            # on a busy machine the first one can take longer than the hold to get there.
            await until_blocked(conn)
            await asyncio.sleep(seconds)
    finally:
        await conn.close()
    return list(await answers)


async def until_blocked(conn: asyncpg.Connection, *, timeout: float = 20.0) -> None:
    """Return once another backend waits on a lock `conn` holds (fail after `timeout` s)."""
    deadline = time.monotonic() + timeout
    while not await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
    ):
        assert time.monotonic() < deadline, "nothing waited on the held lock"
        await asyncio.sleep(0.02)

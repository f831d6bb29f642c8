"""Hold a table lock for a moment, so calls made meanwhile are all waiting at the same step: what
a busy server looks like, without depending on how busy the test machine happens to be."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg

__all__ = ["while_locked"]

T = TypeVar("T")


async def while_locked(
    database_url: str, table: str, start: Callable[[], Sequence[Awaitable[T]]], *, seconds: float = 1.0
) -> list[T]:
    """Call `start` once `table` is locked against reads and writes (ACCESS EXCLUSIVE), release
    it after `seconds`, and return the answers of the calls it started, in order.

    A starter rather than the calls themselves: a grpc.aio call runs from the moment it is
    created, so calls made before the lock is taken race it, and on a busy machine some are
    answered before it is held (which made a limits test fail in CI)."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            # A test-controlled constant, never input.
            await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            tasks = [asyncio.ensure_future(c) for c in start()]
            await asyncio.sleep(seconds)
    finally:
        await conn.close()
    return list(await asyncio.gather(*tasks))

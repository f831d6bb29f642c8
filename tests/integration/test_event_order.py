"""A reader that resumes "after seq N" misses nothing while a tenant's events commit out of order.

This is what StreamEvents cursors (and ListEvents page tokens) rely on: without migration 0017 a
transaction that drew seq 10 but commits after seq 11 was read is skipped for good.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime

import asyncpg


async def test_a_reader_past_seq_n_never_misses_an_event_that_commits_late(suite) -> None:
    tenant = str(uuid.uuid4())
    writers = 40
    pool = await asyncpg.create_pool(suite.database_url, min_size=2, max_size=writers + 2)
    assert pool is not None
    try:

        async def write(index: int) -> str:
            event_id = f"order-test:{tenant}:{index}"
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO events (event_id, tenant_id, message_id, recipient, type, create_time, payload)"
                    " VALUES ($1, $2::uuid, $3::uuid, 'a@example.com', 1, $4, '')",
                    event_id,
                    tenant,
                    str(uuid.uuid4()),
                    datetime.now(UTC),
                )
                # Hold the transaction open a random while: commits land in another order than seqs.
                await asyncio.sleep(random.uniform(0, 0.05))
            return event_id

        seen: list[str] = []
        after = 0
        done = asyncio.Event()

        async def read() -> None:
            nonlocal after
            while True:
                finished = done.is_set()
                rows = await pool.fetch(
                    "SELECT seq, event_id FROM events WHERE tenant_id = $1::uuid AND seq > $2 ORDER BY seq",
                    tenant,
                    after,
                )
                for row in rows:
                    seen.append(row["event_id"])
                    after = row["seq"]
                if finished:
                    return
                await asyncio.sleep(0.002)

        reader = asyncio.create_task(read())
        written: list[str] = []
        for _ in range(5):
            written += await asyncio.gather(*(write(len(written) + i) for i in range(writers)))
        done.set()
        await reader
        assert sorted(seen) == sorted(written), (
            f"{len(set(written) - set(seen))} events skipped by the reader"
        )
        assert len(seen) == len(set(seen))
    finally:
        await pool.close()

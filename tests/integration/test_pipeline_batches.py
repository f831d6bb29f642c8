"""The router and the mta_worker pay one PostgreSQL round trip per fetched batch, not per message
(issue 14), and batching changes no answer: each message still gets its own row, a message that
is no longer waiting gets None, and a task delivered twice in one batch is handled once.

The stores run here against the suite's database, on scheduled messages (send time an hour away)
sent through the public API, so the suite's own router leaves them alone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, cast

import asyncpg
import grpc
from google.protobuf import timestamp_pb2
from postwire.v1 import mail_service_pb2_grpc

from libs.embedded.suite import Suite
from libs.mail.states import MessageState, RecipientState
from services.mta_worker.store import WorkerStore
from services.router.store import RouterStore
from tests.conftest import Tenant
from tests.integration.helpers import mail, unique

BATCH = 8
MIME = b"Subject: batched\r\n\r\nbody\r\n"


class CountingConnection:
    """An asyncpg connection that counts the statements sent through it."""

    def __init__(self, conn: Any, counter: list[str]) -> None:
        self._conn = conn
        self._counter = counter

    def transaction(self) -> Any:
        return self._conn.transaction()

    async def fetch(self, query: str, *args: Any) -> Any:
        self._counter.append(query)
        return await self._conn.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> Any:
        self._counter.append(query)
        return await self._conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        self._counter.append(query)
        return await self._conn.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> Any:
        self._counter.append(query)
        return await self._conn.execute(query, *args)

    async def executemany(self, query: str, args: Any) -> Any:
        self._counter.append(query)
        return await self._conn.executemany(query, args)


class CountingPool:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.statements: list[str] = []

    def acquire(self) -> _Acquired:
        return _Acquired(self._pool, self.statements)


class _Acquired:
    def __init__(self, pool: asyncpg.Pool, counter: list[str]) -> None:
        self._pool = pool
        self._counter = counter
        self._conn: Any = None

    async def __aenter__(self) -> CountingConnection:
        self._conn = await self._pool.acquire()
        return CountingConnection(self._conn, self._counter)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._pool.release(self._conn)


def _in_an_hour() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    return stamp


async def _scheduled(edge: grpc.aio.Channel, tenant: Tenant, count: int) -> list[tuple[str, list[str]]]:
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    sent = []
    for _ in range(count):
        to = [unique(), unique()]
        answer = await stub.SendEmail(
            mail(to=[{"address": a} for a in to], send_time=_in_an_hour()), metadata=tenant.metadata, timeout=10
        )
        sent.append((answer.message_id, to))
    return sent


async def _pool(suite: Suite) -> AsyncIterator[asyncpg.Pool]:
    assert suite.database_url
    pool = await asyncpg.create_pool(suite.database_url, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


async def test_router_leases_and_routes_a_batch_in_one_statement_each(
    suite: Suite, edge: grpc.aio.Channel, tenant: Tenant
) -> None:
    sent = await _scheduled(edge, tenant, BATCH)
    async for pool in _pool(suite):
        counting = CountingPool(pool)
        store = RouterStore(cast(asyncpg.Pool, counting))
        lease = timedelta(seconds=30)
        missing = str(uuid.uuid4())
        rows = await asyncio.gather(
            *(store.load(mid, lease=lease) for mid, _ in sent), store.load(missing, lease=lease)
        )
        assert len(counting.statements) == 1
        assert rows[-1] is None
        for (mid, to), row in zip(sent, rows, strict=False):
            assert row is not None and row.id == mid and row.tenant_id == tenant.id
            assert row.state is MessageState.ACCEPTED
            assert row.recipients == [(i, a, RecipientState.SCHEDULED) for i, a in enumerate(to)]

        counting.statements.clear()
        stall = timedelta(hours=1)
        first = sent[0][0]
        routed = await asyncio.gather(
            *(
                store.mark_routed(mid, mime=MIME, envelope_from="sender@example.com", rfc822_id=f"<{mid}@t>", stall=stall)
                for mid, _ in sent
            ),
            # The same task delivered twice in one batch: one copy wins, as between two replicas.
            store.mark_routed(first, mime=MIME, envelope_from="sender@example.com", rfc822_id="<dup@t>", stall=stall),
        )
        assert routed == [True] * BATCH + [False]
        # The messages and their recipients in one statement (atomic on its own, no BEGIN/COMMIT).
        assert len(counting.statements) == 1

        # Routed now: a redelivered task finds nothing to do.
        counting.statements.clear()
        again = await asyncio.gather(*(store.load(mid, lease=lease) for mid, _ in sent))
        assert again == [None] * BATCH
        assert len(counting.statements) == 1
        await store.close()

        state = await pool.fetch(
            "SELECT m.state AS message, r.state AS recipient, m.rfc822_message_id FROM messages m"
            " JOIN recipients r ON r.message_id = m.id WHERE m.id = ANY($1::uuid[])",
            [uuid.UUID(mid) for mid, _ in sent],
        )
        assert {(r["message"], r["recipient"]) for r in state} == {(MessageState.ROUTED, RecipientState.QUEUED)}
        assert "<dup@t>" not in {r["rfc822_message_id"] for r in state}


async def test_worker_claims_a_batch_in_one_statement(
    suite: Suite, edge: grpc.aio.Channel, tenant: Tenant
) -> None:
    sent = await _scheduled(edge, tenant, BATCH)
    async for pool in _pool(suite):
        router = RouterStore(pool)
        stall = timedelta(hours=1)
        assert all(
            await asyncio.gather(
                *(
                    router.mark_routed(mid, mime=MIME, envelope_from="sender@example.com", rfc822_id=f"<{mid}@t>", stall=stall)
                    for mid, _ in sent
                )
            )
        )
        await router.close()

        counting = CountingPool(pool)
        store = WorkerStore(cast(asyncpg.Pool, counting))
        # A lease longer than the test, so the suite's worker never sends these stand-in bodies.
        lease = timedelta(hours=1)
        first = sent[0][0]
        claims = await asyncio.gather(
            *(store.claim(mid, lease=lease) for mid, _ in sent),
            store.claim(first, lease=lease),
            store.claim(str(uuid.uuid4()), lease=lease),
        )
        assert len(counting.statements) == 1
        # The duplicate copy and the unknown id get nothing; every other message its own claim.
        assert claims[-2:] == [None, None]
        for (mid, to), claim in zip(sent, claims, strict=False):
            assert claim is not None and claim.message_id == mid and claim.tenant_id == tenant.id
            assert claim.mime == MIME and claim.envelope_from == "sender@example.com"
            assert [(r.position, r.address, r.attempts) for r in claim.recipients] == [
                (i, a, 0) for i, a in enumerate(to)
            ]

        # Leased: a second claim (another worker, a redelivery) gets nothing.
        again = await asyncio.gather(*(store.claim(mid, lease=lease) for mid, _ in sent))
        assert again == [None] * BATCH
        await store.close()

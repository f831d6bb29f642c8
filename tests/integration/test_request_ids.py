"""The request_ids table against real PostgreSQL: first answer kept, concurrent retries wait for
it, failures forget the claim, old answers are cleared."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from libs.embedded.suite import Suite
from libs.errors import AlreadyExists
from libs.request_id_store import KEEP, once
from libs.request_ids import RequestId


def _rid(owner: str, value: str = "r-1", fingerprint: bytes = b"f1") -> RequestId:
    return RequestId(owner=owner, method="CreateThing", value=value, fingerprint=fingerprint)


async def test_the_first_answer_is_returned_to_every_retry(suite: Suite) -> None:
    owner = uuid.uuid4().hex
    calls = 0

    async def create() -> bytes:
        nonlocal calls
        calls += 1
        return f"answer {calls}".encode()

    conn = await asyncpg.connect(suite.database_url)
    try:
        assert await once(conn, _rid(owner), create) == b"answer 1"
        assert await once(conn, _rid(owner), create) == b"answer 1"
        assert calls == 1
        with pytest.raises(AlreadyExists) as caught:
            await once(conn, _rid(owner, fingerprint=b"other"), create)
        assert caught.value.field == "request_id"
        # Without an id every call creates.
        assert await once(conn, None, create) == b"answer 2"
    finally:
        await conn.close()


async def test_a_concurrent_retry_waits_for_the_first_and_gets_its_answer(suite: Suite) -> None:
    owner = uuid.uuid4().hex
    first_inside = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    async def slow_create() -> bytes:
        nonlocal calls
        calls += 1
        first_inside.set()
        await release.wait()
        return b"the only answer"

    a = await asyncpg.connect(suite.database_url)
    b = await asyncpg.connect(suite.database_url)
    try:
        first = asyncio.create_task(once(a, _rid(owner), slow_create))
        await first_inside.wait()
        second = asyncio.create_task(once(b, _rid(owner), slow_create))
        await asyncio.sleep(0.2)
        assert not second.done()  # blocked on the first call's uncommitted claim
        release.set()
        assert await first == b"the only answer"
        assert await second == b"the only answer"
        assert calls == 1
    finally:
        await a.close()
        await b.close()


async def test_a_failed_create_is_not_remembered(suite: Suite) -> None:
    owner = uuid.uuid4().hex

    async def failing() -> bytes:
        raise AlreadyExists("name taken", field="name")

    async def working() -> bytes:
        return b"made"

    conn = await asyncpg.connect(suite.database_url)
    try:
        with pytest.raises(AlreadyExists):
            await once(conn, _rid(owner), failing)
        assert await once(conn, _rid(owner), working) == b"made"
    finally:
        await conn.close()


async def test_answers_older_than_the_keep_time_are_cleared(suite: Suite) -> None:
    owner = uuid.uuid4().hex

    async def create() -> bytes:
        return b"x"

    conn = await asyncpg.connect(suite.database_url)
    try:
        await once(conn, _rid(owner, "old"), create)
        await conn.execute(
            "UPDATE request_ids SET create_time = now() - $2::interval - interval '1 minute' WHERE owner = $1",
            owner,
            KEEP,
        )
        await once(conn, _rid(owner, "new"), create)
        left = await conn.fetch("SELECT request_id FROM request_ids WHERE owner = $1", owner)
        assert [r["request_id"] for r in left] == ["new"]
    finally:
        await conn.close()

"""The schema refuses a state the code does not define (migration 0018)."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from libs.embedded.suite import Suite
from libs.mail.states import MessageState, RecipientState


async def test_unknown_states_are_refused_at_the_write(suite: Suite) -> None:
    conn = await asyncpg.connect(suite.database_url)
    try:
        async with conn.transaction():
            mid = uuid.uuid4()
            await conn.execute(
                "INSERT INTO messages (id, tenant_id, request_hash, request, stream, state, route_due_time)"
                " VALUES ($1, $2, '', '', 'transactional', $3, now())",
                mid,
                str(uuid.uuid4()),
                MessageState.ACCEPTED,
            )
            with pytest.raises(asyncpg.CheckViolationError):
                async with conn.transaction():
                    await conn.execute("UPDATE messages SET state = 'queued' WHERE id = $1", mid)
            await conn.execute(
                "INSERT INTO recipients (message_id, position, address, kind, state) VALUES ($1, 0, 'a@b.c', 1, $2)",
                mid,
                RecipientState.ACCEPTED,
            )
            with pytest.raises(asyncpg.CheckViolationError):
                async with conn.transaction():
                    await conn.execute("UPDATE recipients SET state = 'sent' WHERE message_id = $1", mid)
            raise _Rollback
    except _Rollback:
        pass
    finally:
        await conn.close()


class _Rollback(Exception):
    pass

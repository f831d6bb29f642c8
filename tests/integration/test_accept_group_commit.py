"""Concurrent SendEmail calls share their accept commit, and sharing changes no answer: every call
gets its own message, a key reused inside one shared commit still answers one id, and every
answered message is stored with all its recipients."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp
from postwire.v1 import mail_service_pb2_grpc

from tests.integration.helpers import mail, unique
from tests.integration.table_lock import while_locked

CALLS = 40


def _in_an_hour() -> Timestamp:
    """Scheduled an hour ahead, so nothing routes the messages (and rewrites their rows, and
    with them xmin) while the test looks."""
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    return stamp


async def _transactions(database_url: str, message_ids: list[str]) -> tuple[int, int, int]:
    """(messages found, recipients found, distinct inserting transactions) for these ids."""
    conn = await asyncpg.connect(database_url)
    try:
        ids = [uuid.UUID(m) for m in message_ids]
        found = await conn.fetchval("SELECT count(*) FROM messages WHERE id = ANY($1::uuid[])", ids)
        recipients = await conn.fetchval("SELECT count(*) FROM recipients WHERE message_id = ANY($1::uuid[])", ids)
        # xmin is the transaction that inserted the row: rows committed together share it.
        commits = await conn.fetchval(
            "SELECT count(DISTINCT xmin::text) FROM messages WHERE id = ANY($1::uuid[])", ids
        )
        return int(found), int(recipients), int(commits)
    finally:
        await conn.close()


async def test_concurrent_sends_share_commits_and_keep_their_own_answers(suite, edge, tenant) -> None:
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    requests = [
        mail(to=[{"address": unique()}, {"address": unique()}], send_time=_in_an_hour()) for _ in range(CALLS)
    ]
    # While messages is locked the first accept waits, and so does every call behind it.
    answers = await while_locked(
        suite.database_url, "messages", lambda: [stub.SendEmail(r, metadata=tenant.metadata) for r in requests]
    )
    ids = [a.message_id for a in answers]
    assert len(set(ids)) == CALLS
    assert all(len(a.recipients) == 2 for a in answers)
    found, recipients, commits = await _transactions(suite.database_url, ids)
    assert (found, recipients) == (CALLS, 2 * CALLS)
    # Before group commit every call made a transaction of its own (CALLS distinct xmins).
    assert commits <= CALLS // 4


async def test_a_key_reused_within_one_shared_commit_answers_one_id(suite, edge, tenant) -> None:
    """Two calls with one key among many others: the group's insert fails on the key, every
    message is then stored alone, and both calls with the key get the same id."""
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    keyed = mail(to=[{"address": unique()}], idempotency_key=f"group-{uuid.uuid4()}")
    others = [mail(to=[{"address": unique()}]) for _ in range(CALLS)]
    requests = [*others[: CALLS // 2], keyed, keyed, *others[CALLS // 2 :]]
    answers = await while_locked(
        suite.database_url, "messages", lambda: [stub.SendEmail(r, metadata=tenant.metadata) for r in requests]
    )
    keyed_ids = {answers[CALLS // 2].message_id, answers[CALLS // 2 + 1].message_id}
    assert len(keyed_ids) == 1
    other_ids = [a.message_id for i, a in enumerate(answers) if i not in (CALLS // 2, CALLS // 2 + 1)]
    assert len(set(other_ids)) == CALLS
    found, recipients, _ = await _transactions(suite.database_url, [*other_ids, *keyed_ids])
    assert (found, recipients) == (CALLS + 1, CALLS + 1)

"""Statements that change `recipients` rows: acceptance, queueing after routing, the delivery
lease, attempt outcomes, the retry scheduler, stage failures and asynchronous bounces.

The scheduler's query says `state IN ('queued', 'deferred')` literally (interpolated from
RecipientState), matching the partial index recipients_due (migration 0001), which the planner
only uses when it sees the same literal list.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from libs.mail.states import RecipientState, sql_list
from libs.pipeline.connection import Db, Tx, insert_of_stored, unnest_arrays

__all__ = [
    "Outcome",
    "bounce",
    "claim_due",
    "count_stage_failure",
    "give_up_queued",
    "give_up_unrouted",
    "hold_queued",
    "insert_many",
    "insert_new_sql",
    "lease_many_queued",
    "new_arrays",
    "postpone",
    "queue_routed_sql",
    "queued_since",
    "record_outcomes",
    "release",
    "renew_lease",
    "reschedule_queued",
]

_QUEUED = RecipientState.QUEUED
# Recipients the router has not handled yet.
_UNROUTED = sql_list(RecipientState.ACCEPTED, RecipientState.SCHEDULED)
# The predicate of recipients_due; a constant of ours, never input.
_DUE = sql_list(RecipientState.QUEUED, RecipientState.DEFERRED)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One delivery attempt's result for one recipient."""

    message_id: str
    position: int
    state: RecipientState
    first_attempt_time: datetime
    next_attempt_time: datetime | None
    code: int
    enhanced: str
    text: str


async def insert_many(
    conn: Tx, messages: Sequence[tuple[uuid.UUID, Sequence[tuple[str, int, RecipientState]]]], /
) -> None:
    """Several new messages' recipients in one round trip, each message's numbered in order."""
    await conn.executemany(
        "INSERT INTO recipients (message_id, position, address, kind, state) VALUES ($1, $2, $3, $4, $5)",
        [
            (message_id, i, address, kind, state)
            for message_id, recipients in messages
            for i, (address, kind, state) in enumerate(recipients)
        ],
    )


def insert_new_sql(first: int, stored: str) -> str:
    """An INSERT, for a WITH clause, of the recipients `new_arrays` gives as ${first}…, of the
    messages whose id the WITH query `stored` returned."""
    return insert_of_stored("recipients", first, _NEW_COLUMNS, stored)


_NEW_COLUMNS = (
    ("message_id", "uuid"),
    ("position", "int"),
    ("address", "text"),
    ("kind", "smallint"),
    ("state", "text"),
)


def new_arrays(
    messages: Sequence[tuple[uuid.UUID, Sequence[tuple[str, int, RecipientState]]]], /
) -> list[list[object]]:
    """The parameters of insert_new_sql: one list per column."""
    rows = [
        (message_id, i, address, kind, state)
        for message_id, recipients in messages
        for i, (address, kind, state) in enumerate(recipients)
    ]
    return unnest_arrays(rows, len(_NEW_COLUMNS))


def queue_routed_sql(stored: str, stall: str, state: str) -> str:
    """An UPDATE, for a WITH clause, queueing for delivery the recipients of the routed messages
    whose id the WITH query `stored` returned; `stall` and `state` are the parameters (say "$6")
    holding the interval after which the worker's scheduler steps in if the delivery task is lost,
    and RecipientState.QUEUED."""
    return (
        f"UPDATE recipients SET state = {state}, next_attempt_time = now() + {stall}::interval,"
        f" update_time = now() WHERE message_id IN (SELECT id FROM {stored}) AND state IN ({_UNROUTED})"
    )


async def give_up_unrouted(conn: Tx, message_id: uuid.UUID, /, *, state: RecipientState, reason: str) -> None:
    """End every recipient the router had not handled in `state` (failed or expired)."""
    await conn.execute(
        "UPDATE recipients SET state = $2, failure_reason = $3, update_time = now()"
        f" WHERE message_id = $1 AND state IN ({_UNROUTED})",
        message_id,
        state,
        reason,
    )


async def lease_many_queued(
    conn: Db, message_ids: Sequence[uuid.UUID], /, *, lease: timedelta
) -> list[asyncpg.Record]:
    """Lease the queued recipients nobody holds, for a batch of messages in one statement (so the
    lease and the read are one transaction), a row per message that had any: its delivery columns and the leased recipients
    as arrays `positions`, `addresses`, `attempts`, `first_attempt_times` in position order."""
    return await conn.fetch(
        "WITH leased AS (UPDATE recipients SET lease_until = now() + $2::interval"
        " WHERE message_id = ANY($1::uuid[]) AND state = $3 AND (lease_until IS NULL OR lease_until < now())"
        " RETURNING message_id, position, address, attempts, first_attempt_time)"
        " SELECT m.id, m.tenant_id, m.stream, m.tags, m.metadata::text AS metadata, m.mime, m.envelope_from,"
        " m.sandbox, t.require_tls, array_agg(l.position ORDER BY l.position) AS positions,"
        " array_agg(l.address ORDER BY l.position) AS addresses,"
        " array_agg(l.attempts ORDER BY l.position) AS attempts,"
        " array_agg(l.first_attempt_time ORDER BY l.position) AS first_attempt_times"
        " FROM leased l JOIN messages m ON m.id = l.message_id JOIN tenants t ON t.id = m.tenant_id"
        " GROUP BY m.id, t.require_tls",
        list(message_ids),
        lease,
        _QUEUED,
    )


async def renew_lease(
    conn: Db, message_id: uuid.UUID, positions: Sequence[int], /, *, lease: timedelta
) -> None:
    await conn.execute(
        "UPDATE recipients SET lease_until = now() + $3::interval"
        " WHERE message_id = $1 AND position = ANY($2::int[]) AND state = $4",
        message_id,
        list(positions),
        lease,
        _QUEUED,
    )


async def record_outcomes(conn: Tx, outcomes: Sequence[Outcome], /) -> None:
    """Only a recipient still queued is updated, so a replayed batch changes nothing twice."""
    await conn.executemany(
        "UPDATE recipients SET state = $3, attempts = attempts + 1,"
        " first_attempt_time = coalesce(first_attempt_time, $4), next_attempt_time = $5,"
        " last_code = $6, last_enhanced = $7, last_text = $8, lease_until = NULL, update_time = now()"
        " WHERE message_id = $1 AND position = $2 AND state = $9",
        [
            (
                uuid.UUID(o.message_id),
                o.position,
                o.state,
                o.first_attempt_time,
                o.next_attempt_time,
                o.code,
                o.enhanced,
                o.text,
                _QUEUED,
            )
            for o in outcomes
        ],
    )


async def release(conn: Db, message_id: uuid.UUID, positions: Sequence[int], /) -> None:
    """Hand leased recipients back untouched (no attempt counted), due at once."""
    await conn.execute(
        "UPDATE recipients SET lease_until = NULL, next_attempt_time = now(), update_time = now()"
        " WHERE message_id = $1 AND position = ANY($2::int[]) AND state = $3",
        message_id,
        list(positions),
        _QUEUED,
    )


async def postpone(conn: Db, message_id: uuid.UUID, positions: Sequence[int], /, *, delay: timedelta) -> None:
    """Hand leased recipients back untouched, due after `delay`; the lease runs out with it, which
    marks them for the retry lane (see claim_due)."""
    await conn.execute(
        "UPDATE recipients SET lease_until = now() + $3::interval, next_attempt_time = now() + $3::interval,"
        " update_time = now() WHERE message_id = $1 AND position = ANY($2::int[]) AND state = $4",
        message_id,
        list(positions),
        delay,
        _QUEUED,
    )


async def claim_due(conn: Db, /, *, stall: timedelta, limit: int) -> list[tuple[uuid.UUID, bool]]:
    """Recipients whose retry is due, or whose task looks lost, go back to queued with their due
    time moved out by `stall`. Returns a (message id, retry) row per recipient: `retry` when a
    worker has had it before (deferred, or a lease that ran out)."""
    rows = await conn.fetch(
        "WITH due AS (SELECT message_id, position, (state = $3 OR lease_until IS NOT NULL) AS retry"
        " FROM recipients"
        f" WHERE state IN ({_DUE}) AND next_attempt_time <= now()"
        " AND (lease_until IS NULL OR lease_until < now())"
        " ORDER BY next_attempt_time LIMIT $2 FOR UPDATE SKIP LOCKED)"
        " UPDATE recipients r SET state = $4, next_attempt_time = now() + $1::interval,"
        " update_time = now() FROM due WHERE r.message_id = due.message_id AND r.position = due.position"
        " RETURNING r.message_id, due.retry",
        stall,
        limit,
        RecipientState.DEFERRED,
        _QUEUED,
    )
    return [(r["message_id"], bool(r["retry"])) for r in rows]


async def queued_since(conn: Tx, message_id: uuid.UUID, /) -> datetime | None:
    """When the give-up clock of the message's queued recipients started; None if none is queued."""
    value = await conn.fetchval(
        "SELECT min(coalesce(r.first_attempt_time, m.create_time)) FROM recipients r"
        " JOIN messages m ON m.id = r.message_id WHERE r.message_id = $1 AND r.state = $2",
        message_id,
        _QUEUED,
    )
    return value if isinstance(value, datetime) else None


async def hold_queued(conn: Tx, message_id: uuid.UUID, /, *, at_least: timedelta) -> None:
    """Keep the scheduler away from the queued recipients for at least `at_least`."""
    await conn.execute(
        "UPDATE recipients SET next_attempt_time = greatest(next_attempt_time, now() + $2::interval)"
        " WHERE message_id = $1 AND state = $3",
        message_id,
        at_least,
        _QUEUED,
    )


async def reschedule_queued(conn: Tx, message_id: uuid.UUID, /, *, after: timedelta) -> None:
    """Make the queued recipients due `after` from now."""
    await conn.execute(
        "UPDATE recipients SET next_attempt_time = now() + $2::interval WHERE message_id = $1 AND state = $3",
        message_id,
        after,
        _QUEUED,
    )


async def count_stage_failure(conn: Tx, message_id: uuid.UUID, /) -> int | None:
    """One more stage failure on the queued recipients (their leases dropped); the highest count,
    or None if none is queued."""
    value = await conn.fetchval(
        "WITH counted AS (UPDATE recipients SET stage_failures = stage_failures + 1, lease_until = NULL"
        " WHERE message_id = $1 AND state = $2 RETURNING stage_failures)"
        " SELECT max(stage_failures) FROM counted",
        message_id,
        _QUEUED,
    )
    return None if value is None else int(value)


async def give_up_queued(
    conn: Tx, message_id: uuid.UUID, /, *, state: RecipientState, reason: str
) -> list[asyncpg.Record]:
    """End the queued recipients in `state` (failed or expired); their (position, address) rows."""
    return await conn.fetch(
        "UPDATE recipients SET state = $2, failure_reason = $3, lease_until = NULL, next_attempt_time = NULL,"
        " update_time = now() WHERE message_id = $1 AND state = $4 RETURNING position, address",
        message_id,
        state,
        reason,
        _QUEUED,
    )


async def bounce(
    conn: Tx, message_id: uuid.UUID, position: int, /, *, code: int, enhanced: str, text: str
) -> None:
    """An asynchronous bounce (a DSN that came back later) ends the recipient as bounced."""
    await conn.execute(
        "UPDATE recipients SET state = $6, next_attempt_time = NULL, lease_until = NULL,"
        " last_code = $3, last_enhanced = $4, last_text = $5, update_time = now()"
        " WHERE message_id = $1 AND position = $2",
        message_id,
        position,
        code,
        enhanced,
        text,
        RecipientState.BOUNCED,
    )

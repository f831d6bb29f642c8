"""Statements that change `messages` rows: acceptance, the router's lease, routing and giving up.

Statements that wait for routing say `state = 'accepted'` literally (interpolated from
MessageState), because the partial index messages_route_due is defined with that predicate and
the planner only uses it when it sees the same literal.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from libs.mail.states import MessageState, RecipientState
from libs.pipeline import recipients
from libs.pipeline.connection import Db, Tx, unnest_arrays, unnest_from

__all__ = [
    "NewRow",
    "claim_stalled",
    "count_route_failure",
    "defer_routing",
    "give_up",
    "insert_many",
    "insert_new_sql",
    "lease_many_for_routing",
    "new_arrays",
    "route_many",
    "routing_times",
]

# The predicate of messages_route_due (migration 0001); a constant of ours, never input.
_WAITING = f"state = '{MessageState.ACCEPTED.value}'"


_COLUMNS = (
    "id, tenant_id, idempotency_key, request_hash, request, stream, tags, metadata, state, send_time,"
    " route_due_time, template_versions, sandbox, rendered_parts"
)
_VALUES = "$1, $2::uuid, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14"


async def insert_many(conn: Tx, rows: Sequence[NewRow], /) -> None:
    """Store a batch's messages in one round trip. A reused idempotency key raises
    asyncpg.UniqueViolationError, which rolls back the caller's transaction: a batch is stored
    whole or not at all."""
    await conn.executemany(
        f"INSERT INTO messages ({_COLUMNS}) VALUES ({_VALUES})", [_values(r, list(r.tags)) for r in rows]
    )


# unnest() takes one array per column; tags (text[] each) travel as JSON arrays, since an array
# of arrays must be rectangular.
_ARRAY_TYPES = (
    "uuid", "uuid", "text", "bytea", "bytea", "text", "jsonb", "jsonb", "text", "timestamptz", "timestamptz",
    "jsonb", "bool", "jsonb",
)  # fmt: skip


def insert_new_sql(first: int) -> str:
    """An INSERT, for a WITH clause, of the rows `new_arrays` gives as ${first}…: a row whose
    tenant already used its idempotency key is skipped, and the ids stored are RETURNING id."""
    source = unnest_from(first, "n", list(zip(_COLUMNS.split(", "), _ARRAY_TYPES, strict=True)))
    values = _COLUMNS.replace(" tags,", " ARRAY(SELECT jsonb_array_elements_text(n.tags)),")
    return (
        f"INSERT INTO messages ({_COLUMNS}) SELECT {values} FROM {source}"
        " ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id"
    )


def new_arrays(rows: Sequence[NewRow], /) -> list[list[object]]:
    """The parameters of insert_new_sql: one list per column."""
    return unnest_arrays([_values(r, json.dumps(list(r.tags))) for r in rows], len(_ARRAY_TYPES))


def _values(r: NewRow, tags: object) -> tuple[object, ...]:
    return (
        r.id,
        r.tenant_id,
        r.idempotency_key,
        r.request_hash,
        r.request,
        r.stream,
        tags,
        json.dumps(dict(r.metadata)),
        r.state,
        r.send_time,
        r.route_due_time,
        r.template_versions,
        r.sandbox,
        None if r.rendered_parts is None else json.dumps(dict(r.rendered_parts)),
    )


@dataclass(frozen=True, slots=True)
class NewRow:
    """One row for insert_many; the arguments of `insert`."""

    id: uuid.UUID
    tenant_id: str
    idempotency_key: str | None
    request_hash: bytes
    request: bytes
    stream: str
    tags: Sequence[str]
    metadata: Mapping[str, str]
    state: MessageState
    send_time: datetime | None
    route_due_time: datetime
    template_versions: str | None
    sandbox: bool
    rendered_parts: Mapping[str, str] | None


async def lease_many_for_routing(
    conn: Db, message_ids: Sequence[uuid.UUID], /, *, lease: timedelta
) -> list[asyncpg.Record]:
    """Messages still waiting for routing, with the sweeper kept away for `lease`, in one statement,
    each row with its recipients as JSON
    `[[position, address, state], ...]` in `recipients`; messages no longer waiting are absent."""
    return await conn.fetch(
        "WITH leased AS (UPDATE messages SET route_due_time = greatest(route_due_time, now() + $2::interval)"
        f" WHERE id = ANY($1::uuid[]) AND {_WAITING}"
        " RETURNING id, tenant_id, state, request, stream, tags, metadata::text AS metadata, create_time,"
        " send_time, template_versions::text AS template_versions, rendered_parts::text AS rendered_parts)"
        " SELECT leased.*, coalesce((SELECT json_agg(json_build_array(r.position, r.address, r.state)"
        " ORDER BY r.position) FROM recipients r WHERE r.message_id = leased.id), '[]')::text AS recipients"
        " FROM leased",
        list(message_ids),
        lease,
    )


async def route_many(
    conn: Db, routed: Sequence[tuple[uuid.UUID, bytes, str, str]], /, *, stall: timedelta
) -> list[uuid.UUID]:
    """Store the built MIME of a batch of (id, mime, envelope_from, rfc822_id), ids distinct, and
    queue those messages' recipients for delivery, in one statement (atomic without a transaction
    of its own: one round trip instead of BEGIN, two statements and COMMIT); the ids that were
    still waiting (the others were routed or given up elsewhere)."""
    rows = await conn.fetch(
        "WITH stored AS (UPDATE messages m SET state = $5, mime = u.mime, envelope_from = u.envelope_from,"
        " rfc822_message_id = u.rfc822_id, update_time = now()"
        " FROM unnest($1::uuid[], $2::bytea[], $3::text[], $4::text[]) AS u(id, mime, envelope_from, rfc822_id)"
        f" WHERE m.id = u.id AND m.{_WAITING} RETURNING m.id),"
        f" queued AS ({recipients.queue_routed_sql('stored', '$6', '$7')})"
        " SELECT id FROM stored",
        [r[0] for r in routed],
        [r[1] for r in routed],
        [r[2] for r in routed],
        [r[3] for r in routed],
        MessageState.ROUTED,
        stall,
        RecipientState.QUEUED,
    )
    return [r["id"] for r in rows]


async def give_up(conn: Tx, message_id: uuid.UUID, /, *, state: MessageState) -> bool:
    """End routing in `state` (failed or expired); False if it no longer waited for routing."""
    done = await conn.execute(
        f"UPDATE messages SET state = $2, update_time = now() WHERE id = $1 AND {_WAITING}",
        message_id,
        state,
    )
    return bool(done == "UPDATE 1")


async def count_route_failure(conn: Db, message_id: uuid.UUID, /) -> int | None:
    """One more failed routing attempt; the count so far, or None if routing is over."""
    value = await conn.fetchval(
        f"UPDATE messages SET route_failures = route_failures + 1 WHERE id = $1 AND {_WAITING}"
        " RETURNING route_failures",
        message_id,
    )
    return None if value is None else int(value)


async def routing_times(conn: Db, message_id: uuid.UUID, /) -> tuple[datetime, datetime | None] | None:
    """(create_time, send_time) of a message still waiting for routing; None once it is not."""
    row = await conn.fetchrow(
        f"SELECT create_time, send_time FROM messages WHERE id = $1 AND {_WAITING}",
        message_id,
    )
    return None if row is None else (row["create_time"], row["send_time"])


async def defer_routing(conn: Db, message_id: uuid.UUID, /, *, until: timedelta) -> None:
    """Keep the sweeper away for `until` while JetStream holds the message for a delayed redelivery."""
    await conn.execute(
        f"UPDATE messages SET route_due_time = now() + $2::interval WHERE id = $1 AND {_WAITING}",
        message_id,
        until,
    )


async def claim_stalled(conn: Db, /, *, stall: timedelta, limit: int) -> list[uuid.UUID]:
    """Messages due for routing whose task may be lost; their due time moves out by `stall` so the
    next sweep (or another replica) does not claim them again."""
    rows = await conn.fetch(
        "UPDATE messages SET route_due_time = now() + $1::interval WHERE id IN ("
        f" SELECT id FROM messages WHERE {_WAITING} AND route_due_time <= now()"
        " ORDER BY route_due_time LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id",
        stall,
        limit,
    )
    return [r["id"] for r in rows]

"""PostgreSQL access for accepting and reading messages.

Concurrent SendEmail calls share their commit (group commit through libs.coalesce): the calls
that arrive while one accept transaction is in flight are stored together in the next, so a busy
replica makes one commit per batch rather than one per message. Each call still returns only
after the transaction holding its message has committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg
from postwire.internal.v1 import bus_pb2

from libs.coalesce import Coalescer
from libs.event_outbox import insert_events
from libs.event_outbox import insert_new_sql as insert_new_events
from libs.event_outbox import new_arrays as new_events
from libs.failures import dependency_failure
from libs.mail.parts import Parts
from libs.mail.states import RecipientState
from libs.pipeline import messages, recipients
from services.submission.messages import MessageRow, NewMessage, RecipientRow

__all__ = ["MessageRow", "NewMessage", "RecipientRow", "SubmissionStore"]


# One message to accept: the row and its recipients' first events.
_Accept = tuple[NewMessage, Sequence[bus_pb2.EventEnvelope]]


def _outage(exc: Exception) -> bool:
    return dependency_failure(exc) is not None


class SubmissionStore:
    def __init__(self, pool: asyncpg.Pool, *, group_commit: int = 64) -> None:
        self._pool = pool
        self._accepts: Coalescer[_Accept, str | None] = Coalescer(
            self._accept_group, max_batch=group_commit, outage=_outage
        )

    async def accept(self, message: NewMessage, events: Sequence[bus_pb2.EventEnvelope]) -> str | None:
        """Store the message, its recipients and their first events, committed before this returns.

        Returns None when the tenant already used this idempotency key (nothing is written).
        """
        return await self._accepts.load((message, events))

    async def close(self) -> None:
        await self._accepts.close()

    async def _accept_group(self, group: Sequence[_Accept]) -> list[str | None]:
        """Several calls' messages, recipients and first events in one statement: one round trip
        and one commit whatever their number (a statement is a transaction of its own).

        A message whose tenant already used its idempotency key (stored earlier, or earlier in
        this group) is skipped with its recipients and events, and answered None; any other
        failed row fails the statement, and the coalescer then stores each message alone."""
        stored = {
            row["id"]
            for row in await self._pool.fetch(
                _ACCEPT,
                *messages.new_arrays([_row(m) for m, _ in group]),
                *recipients.new_arrays([(m.id, m.recipients) for m, _ in group]),
                *new_events([e for _, events in group for e in events]),
            )
        }
        return [str(m.id) if m.id in stored else None for m, _ in group]

    async def accept_many(
        self, batch: Sequence[NewMessage], events: Sequence[bus_pb2.EventEnvelope]
    ) -> list[str] | None:
        """Store a batch's messages, recipients and first events in one transaction, a few round
        trips whatever its size. None (nothing written) when a concurrent call stored one of its
        idempotency keys first."""
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await messages.insert_many(conn, [_row(m) for m in batch])
                await recipients.insert_many(conn, [(m.id, m.recipients) for m in batch])
                await insert_events(conn, events)
        except asyncpg.UniqueViolationError:
            return None
        return [str(m.id) for m in batch]

    async def find_by_idempotency_keys(self, tenant_id: str, keys: Sequence[str]) -> dict[str, MessageRow]:
        """The tenant's messages stored under any of `keys`, by key: two queries however many."""
        if not keys:
            return {}
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT idempotency_key, {_MESSAGE_COLUMNS} FROM messages"
                " WHERE tenant_id = $1::uuid AND idempotency_key = ANY($2::text[])",
                tenant_id,
                list(keys),
            )
            if not rows:
                return {}
            recipients = await conn.fetch(
                f"SELECT message_id, {_RECIPIENT_COLUMNS} FROM recipients"
                " WHERE message_id = ANY($1::uuid[]) ORDER BY message_id, position",
                [row["id"] for row in rows],
            )
        by_message: dict[uuid.UUID, list[asyncpg.Record]] = {}
        for r in recipients:
            by_message.setdefault(r["message_id"], []).append(r)
        return {row["idempotency_key"]: _message_row(row, by_message.get(row["id"], [])) for row in rows}

    async def find_by_idempotency_key(self, tenant_id: str, key: str) -> MessageRow | None:
        row = await self._pool.fetchval(
            "SELECT id FROM messages WHERE tenant_id = $1::uuid AND idempotency_key = $2", tenant_id, key
        )
        return None if row is None else await self.get(tenant_id, str(row))

    async def get(self, tenant_id: str, message_id: str) -> MessageRow | None:
        try:
            mid = uuid.UUID(message_id)
        except ValueError:
            return None
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = $1 AND tenant_id = $2::uuid",
                mid,
                tenant_id,
            )
            if row is None:
                return None
            recipients = await conn.fetch(
                f"SELECT {_RECIPIENT_COLUMNS} FROM recipients WHERE message_id = $1 ORDER BY position",
                mid,
            )
        return _message_row(row, recipients)


_ACCEPT = (
    f"WITH m AS ({messages.insert_new_sql(1)}),"
    f" r AS ({recipients.insert_new_sql(15, 'm')}),"
    f" o AS ({insert_new_events(20, 'm')})"
    " SELECT id FROM m"
)

_MESSAGE_COLUMNS = (
    "id, request, request_hash, stream, create_time, send_time, rfc822_message_id,"
    " template_versions::text AS template_versions, sandbox"
)
_RECIPIENT_COLUMNS = (
    "address, kind, state, attempts, last_code, last_enhanced, last_text, next_attempt_time, update_time,"
    " failure_reason"
)


def _message_row(row: asyncpg.Record, recipients: Sequence[asyncpg.Record]) -> MessageRow:
    return MessageRow(
        id=str(row["id"]),
        request=row["request"],
        request_hash=row["request_hash"],
        stream=row["stream"],
        create_time=row["create_time"],
        send_time=row["send_time"],
        rfc822_message_id=row["rfc822_message_id"],
        recipients=[
            RecipientRow(
                address=r["address"],
                kind=r["kind"],
                state=RecipientState(r["state"]),
                attempts=r["attempts"],
                last_code=r["last_code"],
                last_enhanced=r["last_enhanced"],
                last_text=r["last_text"],
                next_attempt_time=r["next_attempt_time"],
                update_time=r["update_time"],
                failure_reason=r["failure_reason"],
            )
            for r in recipients
        ],
        template_versions=row["template_versions"],
        sandbox=row["sandbox"],
    )


def _parts(parts: Parts | None) -> dict[str, str] | None:
    if parts is None:
        return None
    return {"subject": parts.subject, "html_body": parts.html_body, "text_body": parts.text_body}


def _row(m: NewMessage) -> messages.NewRow:
    return messages.NewRow(
        id=m.id,
        tenant_id=m.tenant_id,
        idempotency_key=m.idempotency_key,
        request_hash=m.request_hash,
        request=m.request,
        stream=m.stream,
        tags=m.tags,
        metadata=m.metadata,
        state=m.state,
        send_time=m.send_time,
        route_due_time=m.route_due_time,
        template_versions=m.template_versions,
        sandbox=m.sandbox,
        rendered_parts=_parts(m.rendered),
    )

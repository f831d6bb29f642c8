"""PostgreSQL access for events: storing from the bus, querying, and the outbox sweeper."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, timedelta

import asyncpg
from postwire.internal.v1 import bus_pb2

from libs import event_outbox
from libs.telemetry import current_trace_context
from services.events.event_query import EventQuery
from services.events.suppression_rule import PendingSuppression
from services.events.suppression_store import queue_suppressions_sql, suppression_columns
from services.events.webhook_records import Claim
from services.events.webhook_store import fan_out_sql

__all__ = ["Arrival", "EventsStore"]

# The batch, first occurrence of each event id only ($1 to $9 in parallel, n its position).
# Inserted ordered by the per-tenant lock the insert trigger takes (migration 0017), so two
# batches over the same tenants take their locks in one order and cannot deadlock; a tenant-level
# event such as WEBHOOK_DISABLED has no message id (NULLIF). The outbox rows are retired only
# once the inserts are done (the count), keeping that lock order too.
_STORE = (
    "WITH e AS (SELECT DISTINCT ON (id) * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
    " $5::smallint[], $6::timestamptz[], $7::bytea[], $8::text[], $9::text[]) WITH ORDINALITY"
    " AS e(id, tenant, message, recipient, type, at, payload, stream, trace, n) ORDER BY id, n),"
    " ins AS (INSERT INTO events (event_id, tenant_id, message_id, recipient, type, create_time, payload)"
    " SELECT id, tenant::uuid, NULLIF(message, '')::uuid, recipient, type, at, payload FROM e"
    " ORDER BY hashtext(tenant), n ON CONFLICT (event_id) DO NOTHING RETURNING event_id),"
    " new AS (SELECT e.* FROM e JOIN ins ON ins.event_id = e.id), "
    + fan_out_sql("new", tag_rows="$10", tags="$11", lease="$12")
    + ", suppressed AS ("
    + queue_suppressions_sql(13, "ins")
    + "), retired AS ("
    + event_outbox.retire_stored_sql("$1")
    + " AND (SELECT count(*) FROM ins) >= 0)"
    # One row per newly stored event and delivery queued for it (NULL webhook: none).
    " SELECT ins.event_id, h.webhook_id, h.url, h.secret, h.previous_secret FROM ins"
    " LEFT JOIN queued q ON q.event_id = ins.event_id"
    " LEFT JOIN hooks h ON h.webhook_id = q.webhook_id AND h.event_id = q.event_id"
)


@dataclass(frozen=True, slots=True)
class Arrival:
    """An event taken from the bus, with what storing it implies."""

    envelope: bus_pb2.EventEnvelope
    suppression: PendingSuppression | None = None
    # The consumer span's W3C traceparent, so webhook deliveries join the event's trace.
    trace_context: str = ""


class EventsStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._offer: Callable[[Sequence[Claim]], None] | None = None
        self._lease: timedelta | None = None

    def hand_deliveries_to(self, offer: Callable[[Sequence[Claim]], None], *, lease: timedelta) -> None:
        """From now on the webhook deliveries of newly stored events are leased to `offer` in the
        storing transaction and handed to it after the commit, instead of waiting for a claim."""
        self._offer, self._lease = offer, lease

    async def store(
        self, envelope: bus_pb2.EventEnvelope, *, suppression: PendingSuppression | None = None
    ) -> bool:
        """Keep the event (once), queue the suppression it causes, and retire its outbox row, in
        one transaction; False for an event already stored."""
        [stored] = await self.store_many(
            [Arrival(envelope, suppression, trace_context=current_trace_context())]
        )
        return stored

    async def store_many(self, arrivals: Sequence[Arrival]) -> list[bool]:
        """Store a batch in one statement (so one implicit transaction and one round trip): the
        events, their webhook deliveries and suppressions, and the retirement of their outbox
        rows. Answers, in order, whether each arrival was newly stored (False for an event stored
        before, or earlier in the batch). A redelivered event queues nothing: the tenant may have
        lifted the suppression since."""
        if not arrivals:
            return []
        events = [a.envelope.event for a in arrivals]
        payloads = [e.SerializeToString() for e in events]
        suppressions = [a.suppression for a in arrivals if a.suppression is not None]
        leased = self._lease if self._offer is not None else None
        rows = await self._pool.fetch(
            _STORE,
            [e.id for e in events],
            [a.envelope.tenant_id for a in arrivals],
            [e.message_id for e in events],
            [e.recipient for e in events],
            [e.type for e in events],
            [e.create_time.ToDatetime(tzinfo=UTC) for e in events],
            payloads,
            [e.stream for e in events],
            [a.trace_context for a in arrivals],
            [n for n, e in enumerate(events, 1) for _ in e.tags],
            [tag for e in events for tag in e.tags],
            leased,
            *suppression_columns(suppressions),
        )
        inserted = {r["event_id"] for r in rows}
        first: dict[str, int] = {}
        for n, event in enumerate(events):
            # The same event twice in one batch (a redelivery overtaking the first): first wins.
            if event.id in inserted and event.id not in first:
                first[event.id] = n
        if leased is not None and self._offer is not None:
            claims = [
                Claim(
                    webhook_id=str(r["webhook_id"]),
                    event_id=r["event_id"],
                    attempts=0,
                    trace_context=arrivals[first[r["event_id"]]].trace_context,
                    url=r["url"],
                    secret=r["secret"],
                    previous_secret=r["previous_secret"],
                    payload=payloads[first[r["event_id"]]],
                )
                for r in rows
                if r["webhook_id"] is not None
            ]
            if claims:
                self._offer(claims)
        fresh = set(first.values())
        return [n in fresh for n in range(len(arrivals))]

    async def last_seq(self, tenant_id: str) -> int:
        """The tenant's newest stored event (0 if none): where a stream of only new events starts,
        and how far a stream's read can go. Every event of the tenant up to it is already
        visible (migration 0017), so a stream that has read up to it need never read below it."""
        value = await self._pool.fetchval(
            "SELECT coalesce(max(seq), 0) FROM events WHERE tenant_id = $1::uuid", tenant_id
        )
        return int(value)

    async def query(self, q: EventQuery) -> list[tuple[int, bytes]]:
        clauses = ["tenant_id = $1::uuid", "seq > $2"]
        args: list[object] = [q.tenant_id, q.after_seq]

        def add(sql: str, value: object) -> None:
            args.append(value)
            clauses.append(sql.replace("?", f"${len(args)}"))

        if q.message_id is not None:
            add("message_id = ?", q.message_id)
        if q.recipient:
            add("lower(recipient) = lower(?)", q.recipient)
        if q.types:
            add("type = ANY(?::smallint[])", list(q.types))
        if q.start_time is not None:
            add("create_time >= ?", q.start_time)
        if q.end_time is not None:
            add("create_time < ?", q.end_time)
        if q.up_to_seq is not None:
            add("seq <= ?", q.up_to_seq)
        args.append(q.limit)
        rows = await self._pool.fetch(
            f"SELECT seq, payload FROM events WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ${len(args)}",
            *args,
        )
        return [(r["seq"], r["payload"]) for r in rows]

    async def hold(self, event_id: str, *, seconds: float) -> None:
        """Keep the outbox sweeper away while JetStream holds the event for a delayed redelivery."""
        await event_outbox.hold(self._pool, _candidates(event_id), seconds=seconds)

    async def count_failure(self, event_id: str, *, reason: str, max_attempts: int) -> int | None:
        """One more failed attempt to store the event; at `max_attempts` the outbox row is retired
        from sweeping with `reason` (kept for an operator). None if there is no outbox row."""
        return await event_outbox.count_failure(
            self._pool, _candidates(event_id), reason=reason, max_attempts=max_attempts
        )

    async def claim_lingering(self, *, stall: timedelta, limit: int = 500) -> list[tuple[str, str, bytes]]:
        """Outbox rows not stored after `stall`: their publish failed or the stream lost them."""
        return await event_outbox.claim_lingering(self._pool, stall=stall, limit=limit)


def _candidates(publish_id: str) -> list[str]:
    """Outbox ids a publish id may stand for: itself, or without the sweeper's `:<stamp>`."""
    head, _, tail = publish_id.rpartition(":")
    return [publish_id, head] if head and tail.isdigit() else [publish_id]

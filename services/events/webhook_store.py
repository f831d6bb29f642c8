"""PostgreSQL access for webhooks: endpoints, the fan-out of stored events into delivery rows,
and the dispatcher's leases and outcomes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
from postwire.internal.v1 import bus_pb2
from postwire.v1 import event_pb2

from libs.event_outbox import insert_events
from libs.request_id_store import Connection, answered, once
from libs.request_ids import RequestId
from services.events.kinds import DeliveryState
from services.events.webhook_records import Claim, Delivered, DeliveryRow, WebhookRow
from services.events.webhook_rules import WebhookSpec

__all__ = ["DisableRule", "WebhookStore", "disabled_event", "fan_out_sql"]

# Delivery states go into the SQL text as numbers (an IntEnum formats as its value): the
# `state = 1` of the partial index webhook_deliveries_due must be a literal for the planner to use
# it. Constants of ours, never input.

# (status of the failed attempt, start of the failure run, now) -> why to disable, or ''.
DisableRule = Callable[[int, datetime | None, datetime], str]

_WEBHOOK_COLUMNS = "id, url, event_types, streams, tags, enabled, disabled_reason, create_time"
_DELIVERY_COLUMNS = (
    "event_id, event_type, state, attempts, last_status, last_response, last_latency_ms,"
    " last_attempt_time, next_attempt_time, create_time"
)


def _webhook(r: asyncpg.Record) -> WebhookRow:
    return WebhookRow(
        id=str(r["id"]),
        url=r["url"],
        event_types=tuple(r["event_types"]),
        streams=tuple(r["streams"]),
        tags=tuple(r["tags"]),
        enabled=r["enabled"],
        disabled_reason=r["disabled_reason"],
        create_time=r["create_time"],
    )


def _delivery(r: asyncpg.Record) -> DeliveryRow:
    return DeliveryRow(**{k: r[k] for k in DeliveryRow.__slots__})


def fan_out_sql(new: str, *, tag_rows: str, tags: str, lease: str) -> str:
    """Two CTEs for the statement that stores events, so an event is never stored without its
    deliveries: `hooks`, one row per (event of `new`, enabled webhook of its tenant that wants
    it), and `queued`, their PENDING delivery rows, returning (webhook_id, event_id).

    `new` is a CTE of the newly stored events with columns id, tenant, message, type, stream,
    trace (the W3C traceparent the deliveries join) and n (the event's position); an event's tags
    come as two parallel arrays, `tag_rows` (bigint[], the n of each tag's event) and `tags`
    (text[]). With a `lease` (an interval parameter, NULL for none) the rows are leased to the
    caller already, for it to send after the commit without a claim query.

    The rule: the webhook lists the event's type; a tenant-level event (no message, such as
    WEBHOOK_DISABLED) passes the stream and tag filters; otherwise the stream, if the webhook
    names any, is one of them, and one of the event's tags, if the webhook names any, is one."""
    return (
        "hooks AS (SELECT w.id AS webhook_id, w.url, w.secret,"
        " CASE WHEN w.previous_expire_time > now() THEN w.previous_secret END AS previous_secret,"
        f" v.id AS event_id, v.tenant, v.type, v.trace FROM {new} v"
        " JOIN webhooks w ON w.tenant_id = v.tenant::uuid AND w.enabled AND v.type = ANY(w.event_types)"
        " WHERE v.message = '' OR ((cardinality(w.streams) = 0 OR v.stream = ANY(w.streams))"
        " AND (cardinality(w.tags) = 0 OR EXISTS (SELECT 1"
        f" FROM unnest({tag_rows}::bigint[], {tags}::text[]) AS t(n, tag) WHERE t.n = v.n AND t.tag = ANY(w.tags))))),"
        " queued AS (INSERT INTO webhook_deliveries"
        " (webhook_id, event_id, tenant_id, event_type, trace_context, lease_until)"
        f" SELECT webhook_id, event_id, tenant::uuid, type, trace, now() + {lease}::interval FROM hooks"
        " ON CONFLICT DO NOTHING RETURNING webhook_id, event_id)"
    )


class WebhookStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # --- endpoints -------------------------------------------------------------------------

    async def create(
        self,
        tenant_id: str,
        webhook_id: str,
        spec: WebhookSpec,
        sealed_secret: str,
        *,
        request_id: RequestId | None,
        answer: Callable[[WebhookRow], bytes],
        seal: Callable[[bytes], bytes],
        unseal: Callable[[bytes], bytes],
    ) -> bytes:
        async with self._pool.acquire() as conn:

            async def insert() -> bytes:
                row = await conn.fetchrow(
                    "INSERT INTO webhooks (id, tenant_id, url, event_types, streams, tags, secret)"
                    " VALUES ($1::uuid, $2::uuid, $3, $4::smallint[], $5, $6, $7)"
                    f" RETURNING {_WEBHOOK_COLUMNS}",
                    webhook_id,
                    tenant_id,
                    spec.url,
                    list(spec.event_types),
                    list(spec.streams),
                    list(spec.tags),
                    sealed_secret,
                )
                if row is None:  # INSERT … RETURNING returns the row or raises
                    raise RuntimeError("INSERT INTO webhooks returned no row")
                return answer(_webhook(row))

            return await once(conn, request_id, insert, seal=seal, unseal=unseal)

    async def answered(self, request_id: RequestId, unseal: Callable[[bytes], bytes]) -> bytes | None:
        return await answered(self._pool, request_id, unseal=unseal)

    async def get(self, tenant_id: str, webhook_id: uuid.UUID) -> WebhookRow | None:
        row = await self._pool.fetchrow(
            f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1 AND tenant_id = $2::uuid",
            webhook_id,
            tenant_id,
        )
        return None if row is None else _webhook(row)

    async def page(
        self, tenant_id: str, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[WebhookRow]:
        if after is None:
            rows = await self._pool.fetch(
                f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1::uuid"
                " ORDER BY create_time, id LIMIT $2",
                tenant_id,
                limit,
            )
        else:
            rows = await self._pool.fetch(
                f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1::uuid AND (create_time, id) > ($2, $3)"
                " ORDER BY create_time, id LIMIT $4",
                tenant_id,
                after[0],
                after[1],
                limit,
            )
        return [_webhook(r) for r in rows]

    async def update(self, tenant_id: str, webhook_id: uuid.UUID, spec: WebhookSpec) -> WebhookRow | None:
        """Sets the fields named in `spec.fields`. Enabling clears the reason and the failure
        clock; disabling by hand dead-letters what is pending, as an automatic disabling does."""
        sets: list[str] = ["update_time = now()"]
        args: list[object] = [webhook_id, tenant_id]

        def put(column: str, value: object, cast: str = "") -> None:
            args.append(value)
            sets.append(f"{column} = ${len(args)}{cast}")

        if "url" in spec.fields:
            put("url", spec.url)
        if "event_types" in spec.fields:
            put("event_types", list(spec.event_types), "::smallint[]")
        if "streams" in spec.fields:
            put("streams", list(spec.streams))
        if "tags" in spec.fields:
            put("tags", list(spec.tags))
        if "enabled" in spec.fields:
            put("enabled", spec.enabled)
            if spec.enabled:
                sets.append("disabled_reason = CASE WHEN enabled THEN disabled_reason ELSE '' END")
                sets.append("failing_since = CASE WHEN enabled THEN failing_since END")
            else:
                sets.append(
                    "disabled_reason = CASE WHEN enabled THEN 'disabled by the tenant' ELSE disabled_reason END"
                )
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"UPDATE webhooks SET {', '.join(sets)} WHERE id = $1 AND tenant_id = $2::uuid"
                f" RETURNING {_WEBHOOK_COLUMNS}",
                *args,
            )
            if row is not None and not row["enabled"]:
                await _dead_letter_pending(conn, webhook_id)
        return None if row is None else _webhook(row)

    async def delete(self, tenant_id: str, webhook_id: uuid.UUID) -> bool:
        # Delivery rows go with it (ON DELETE CASCADE).
        result = await self._pool.execute(
            "DELETE FROM webhooks WHERE id = $1 AND tenant_id = $2::uuid", webhook_id, tenant_id
        )
        return bool(result == "DELETE 1")

    async def rotate(
        self, tenant_id: str, webhook_id: uuid.UUID, sealed_secret: str, overlap: timedelta
    ) -> datetime | None:
        """The current secret becomes the previous one for `overlap`; None if there is no such
        webhook. The seal is bound to the webhook id, so the previous seal stays valid."""
        value = await self._pool.fetchval(
            "UPDATE webhooks SET previous_secret = secret, secret = $3,"
            " previous_expire_time = now() + $4::interval, update_time = now()"
            " WHERE id = $1 AND tenant_id = $2::uuid RETURNING previous_expire_time",
            webhook_id,
            tenant_id,
            sealed_secret,
            overlap,
        )
        return value if isinstance(value, datetime) else None

    # --- delivery log ------------------------------------------------------------------------

    async def deliveries(
        self,
        tenant_id: str,
        webhook_id: uuid.UUID,
        *,
        state: DeliveryState | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[DeliveryRow]:
        clauses = ["webhook_id = $1", "tenant_id = $2::uuid"]
        args: list[object] = [webhook_id, tenant_id]
        if state is not None:
            args.append(int(state))
            clauses.append(f"state = ${len(args)}")
        if after is not None:
            args.extend(after)
            clauses.append(f"(create_time, event_id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit)
        rows = await self._pool.fetch(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE {' AND '.join(clauses)}"
            f" ORDER BY create_time DESC, event_id DESC LIMIT ${len(args)}",
            *args,
        )
        return [_delivery(r) for r in rows]

    async def redeliver(self, tenant_id: str, webhook_id: uuid.UUID, event_id: str) -> DeliveryRow | None:
        """Due at once, PENDING (also when delivered or dead-lettered, or never queued because
        the webhook came later); None when the tenant has no such event."""
        row = await self._pool.fetchrow(
            "INSERT INTO webhook_deliveries (webhook_id, event_id, tenant_id, event_type)"
            " SELECT $1, e.event_id, e.tenant_id, e.type FROM events e"
            " WHERE e.event_id = $3 AND e.tenant_id = $2::uuid"
            f" ON CONFLICT (webhook_id, event_id) DO UPDATE SET state = {DeliveryState.PENDING}, next_attempt_time = now(),"
            f" lease_until = NULL RETURNING {_DELIVERY_COLUMNS}",
            webhook_id,
            tenant_id,
            event_id,
        )
        return None if row is None else _delivery(row)

    # --- dispatcher --------------------------------------------------------------------------

    async def claim(self, *, limit: int, lease: timedelta, exclude: Sequence[str]) -> list[Claim]:
        """Lease up to `limit` due deliveries of enabled webhooks (not those in `exclude`, which
        have all the requests in flight they may have). SKIP LOCKED: replicas never claim the
        same row, and an expired lease (a crashed dispatcher) makes the row due again."""
        rows = await self._pool.fetch(
            "WITH due AS ("
            " SELECT d.webhook_id, d.event_id FROM webhook_deliveries d"
            f" WHERE d.state = {DeliveryState.PENDING} AND d.next_attempt_time <= now()"
            " AND (d.lease_until IS NULL OR d.lease_until < now())"
            " AND d.webhook_id <> ALL($3::uuid[])"
            # A row queued while its webhook was being disabled waits for it to be enabled again.
            " AND EXISTS (SELECT 1 FROM webhooks w WHERE w.id = d.webhook_id AND w.enabled)"
            " ORDER BY d.next_attempt_time LIMIT $1 FOR UPDATE SKIP LOCKED),"
            " claimed AS (UPDATE webhook_deliveries d SET lease_until = now() + $2::interval FROM due"
            " WHERE d.webhook_id = due.webhook_id AND d.event_id = due.event_id"
            " RETURNING d.webhook_id, d.event_id, d.attempts, d.trace_context)"
            " SELECT c.webhook_id, c.event_id, c.attempts, c.trace_context, w.url, w.secret,"
            " CASE WHEN w.previous_expire_time > now() THEN w.previous_secret END AS previous_secret,"
            " e.payload FROM claimed c JOIN webhooks w ON w.id = c.webhook_id AND w.enabled"
            " JOIN events e ON e.event_id = c.event_id",
            limit,
            lease,
            list(exclude),
        )
        return [
            Claim(
                webhook_id=str(r["webhook_id"]),
                event_id=r["event_id"],
                attempts=r["attempts"],
                trace_context=r["trace_context"],
                url=r["url"],
                secret=r["secret"],
                previous_secret=r["previous_secret"],
                payload=r["payload"],
            )
            for r in rows
        ]

    async def release_many(self, claims: Sequence[Claim]) -> None:
        """Give leased deliveries back to the claim loop (the dispatcher had no room for them)."""
        await self._pool.execute(
            "UPDATE webhook_deliveries d SET lease_until = NULL"
            " FROM unnest($1::uuid[], $2::text[]) AS r(webhook_id, event_id)"
            " WHERE d.webhook_id = r.webhook_id AND d.event_id = r.event_id",
            [c.webhook_id for c in claims],
            [c.event_id for c in claims],
        )

    async def delivered_many(self, outcomes: Sequence[Delivered]) -> list[None]:
        """Record successful attempts: one statement (so one transaction) for the batch, which
        also stops the failure clock of their webhooks. A delivery whose record is lost (crash,
        database away) keeps its lease until it expires and is sent again: at least once."""
        if outcomes:
            await self._pool.execute(
                "WITH done AS ("
                f" UPDATE webhook_deliveries d SET state = {DeliveryState.DELIVERED}, attempts = d.attempts + 1,"
                " lease_until = NULL, last_status = o.status, last_response = o.snippet,"
                " last_latency_ms = o.latency_ms, last_attempt_time = now()"
                " FROM unnest($1::uuid[], $2::text[], $3::integer[], $4::text[], $5::integer[])"
                " AS o(webhook_id, event_id, status, snippet, latency_ms)"
                " WHERE d.webhook_id = o.webhook_id AND d.event_id = o.event_id RETURNING d.webhook_id)"
                " UPDATE webhooks SET failing_since = NULL"
                " WHERE id IN (SELECT webhook_id FROM done) AND failing_since IS NOT NULL",
                [o.claim.webhook_id for o in outcomes],
                [o.claim.event_id for o in outcomes],
                [o.status for o in outcomes],
                [o.snippet for o in outcomes],
                [o.latency_ms for o in outcomes],
            )
        return [None] * len(outcomes)

    async def failed(
        self,
        claim: Claim,
        *,
        status: int,
        snippet: str,
        latency_ms: int,
        next_attempt: datetime | None,
        disable: DisableRule,
    ) -> bus_pb2.EventEnvelope | None:
        """Records a failed attempt: due again at `next_attempt`, or dead-lettered when None.
        Starts the failure clock; if `disable` says so the webhook is disabled, its pending
        deliveries dead-lettered and a WEBHOOK_DISABLED event queued in the same transaction
        (returned, to publish after commit)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, lease_until = NULL,"
                f" state = CASE WHEN $6::timestamptz IS NULL THEN {DeliveryState.DEAD_LETTERED} ELSE {DeliveryState.PENDING} END,"
                " next_attempt_time = COALESCE($6, next_attempt_time),"
                " last_status = $3, last_response = $4, last_latency_ms = $5, last_attempt_time = now()"
                f" WHERE webhook_id = $1::uuid AND event_id = $2 AND state = {DeliveryState.PENDING}",
                claim.webhook_id,
                claim.event_id,
                status,
                snippet,
                latency_ms,
                next_attempt,
            )
            hook = await conn.fetchrow(
                "UPDATE webhooks SET failing_since = COALESCE(failing_since, now()) WHERE id = $1::uuid"
                " RETURNING tenant_id, enabled, failing_since, now() AS now",
                claim.webhook_id,
            )
            if hook is None or not hook["enabled"]:
                return None
            reason = disable(status, hook["failing_since"], hook["now"])
            if not reason:
                return None
            disabled = await conn.fetchval(
                "UPDATE webhooks SET enabled = false, disabled_reason = $2, update_time = now()"
                " WHERE id = $1::uuid AND enabled RETURNING now()",
                claim.webhook_id,
                reason,
            )
            if disabled is None:
                return None  # another attempt disabled it first
            await _dead_letter_pending(conn, uuid.UUID(claim.webhook_id))
            envelope = disabled_event(str(hook["tenant_id"]), claim.webhook_id, reason, disabled)
            await insert_events(conn, [envelope])
            return envelope


def disabled_event(tenant_id: str, webhook_id: str, reason: str, when: datetime) -> bus_pb2.EventEnvelope:
    """The tenant-level WEBHOOK_DISABLED event: no message, the webhook's id and the reason."""
    event = event_pb2.Event(
        id=f"webhook:{webhook_id}:disabled:{int(when.timestamp() * 1000)}",
        type=event_pb2.EVENT_TYPE_WEBHOOK_DISABLED,
        webhook_id=webhook_id,
        reason=reason,
    )
    event.create_time.FromDatetime(when.astimezone(UTC))
    return bus_pb2.EventEnvelope(tenant_id=tenant_id, event=event)


async def _dead_letter_pending(conn: Connection, webhook_id: uuid.UUID) -> None:
    await conn.execute(
        f"UPDATE webhook_deliveries SET state = {DeliveryState.DEAD_LETTERED}, lease_until = NULL"
        f" WHERE webhook_id = $1 AND state = {DeliveryState.PENDING}",
        webhook_id,
    )

"""PostgreSQL access for the routing step; the statements themselves are libs.pipeline's."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from postwire.internal.v1 import bus_pb2

from libs.coalesce import Coalescer
from libs.event_outbox import insert_events
from libs.failures import dependency_failure
from libs.mail.states import MessageState, RecipientState
from libs.pipeline import messages, recipients

__all__ = ["RouteRow", "RouterStore"]


@dataclass(frozen=True, slots=True)
class RouteRow:
    id: str
    tenant_id: str
    state: MessageState
    request: bytes
    stream: str
    tags: list[str]
    metadata: str
    create_time: datetime
    send_time: datetime | None
    recipients: list[tuple[int, str, RecipientState]]  # (position, address, state)
    template_versions: str | None = None  # JSON, see libs.render_request
    # JSON {"subject", "html_body", "text_body"}: the template as rendered at acceptance, or None
    # (no template, or accepted before rendered parts were stored: render now).
    rendered_parts: str | None = None


# A lease request (message id, lease) and a routing result (id, mime, envelope from, Message-ID,
# stall), as the coalescers batch them.
_Lease = tuple[uuid.UUID, timedelta]
_Routed = tuple[uuid.UUID, bytes, str, str, timedelta]


def _outage(exc: Exception) -> bool:
    return dependency_failure(exc) is not None


class RouterStore:
    """Each handler asks for its own message; the requests of one fetched batch share one
    statement (libs.coalesce), so routing costs a round trip per batch, not per message."""

    def __init__(self, pool: asyncpg.Pool, *, batch: int = 64) -> None:
        self._pool = pool
        self._leases: Coalescer[_Lease, RouteRow | None] = Coalescer(
            self._lease_batch, max_batch=batch, outage=_outage
        )
        self._routes: Coalescer[_Routed, bool] = Coalescer(self._route_batch, max_batch=batch, outage=_outage)

    async def load(self, message_id: str, *, lease: timedelta | None = None) -> RouteRow | None:
        """The message if it still waits for routing; with `lease`, the sweeper also leaves it
        alone that long, since JetStream itself redelivers it if this replica dies."""
        return await self._leases.load((uuid.UUID(message_id), lease or timedelta(0)))

    async def _lease_batch(self, keys: Sequence[_Lease]) -> list[RouteRow | None]:
        found: dict[uuid.UUID, RouteRow] = {}
        async with self._pool.acquire() as conn:
            # Normally one lease for the whole batch (the consumer's AckWait).
            for lease in dict.fromkeys(lease for _, lease in keys):
                ids = list(dict.fromkeys(mid for mid, each in keys if each == lease))
                for row in await messages.lease_many_for_routing(conn, ids, lease=lease):
                    found[row["id"]] = _route_row(row)
        # A task delivered twice in one batch: the second copy finds nothing to do, as it would
        # have after the first had routed it.
        answers: list[RouteRow | None] = []
        for mid, _ in keys:
            answers.append(found.pop(mid, None))
        return answers

    async def mark_routed(
        self, message_id: str, *, mime: bytes, envelope_from: str, rfc822_id: str, stall: timedelta
    ) -> bool:
        """Store the built message and queue its recipients; False if another replica did it first."""
        return await self._routes.load((uuid.UUID(message_id), mime, envelope_from, rfc822_id, stall))

    async def _route_batch(self, keys: Sequence[_Routed]) -> list[bool]:
        # The first copy of an id is the one written; later copies answer False (lost the race).
        first = {key[0]: i for i, key in reversed(list(enumerate(keys)))}
        routed: set[uuid.UUID] = set()
        async with self._pool.acquire() as conn:
            # Normally one stall for the whole batch; each statement is atomic on its own.
            for stall in dict.fromkeys(key[4] for key in keys):
                batch = [keys[i][:4] for i in first.values() if keys[i][4] == stall]
                routed.update(await messages.route_many(conn, batch, stall=stall))
        return [key[0] in routed and first[key[0]] == i for i, key in enumerate(keys)]

    async def mark_failed(
        self,
        message_id: str,
        events: Sequence[bus_pb2.EventEnvelope],
        *,
        reason: str,
        expired: bool = False,
    ) -> bool:
        """Give the message up (failed, or expired) with its events; False if it was no longer
        waiting for routing."""
        mid = uuid.UUID(message_id)
        message_state, recipient_state = (
            (MessageState.EXPIRED, RecipientState.EXPIRED)
            if expired
            else (MessageState.FAILED, RecipientState.FAILED)
        )
        async with self._pool.acquire() as conn, conn.transaction():
            if not await messages.give_up(conn, mid, state=message_state):
                return False
            await recipients.give_up_unrouted(conn, mid, state=recipient_state, reason=reason)
            await insert_events(conn, events)
        return True

    async def close(self) -> None:
        await self._leases.close()
        await self._routes.close()

    async def count_failure(self, message_id: str) -> int | None:
        """One more failed routing attempt; the count so far, or None if routing is over."""
        return await messages.count_route_failure(self._pool, uuid.UUID(message_id))

    async def times(self, message_id: str) -> tuple[datetime, datetime | None] | None:
        """(create_time, send_time) if the message still waits for routing."""
        return await messages.routing_times(self._pool, uuid.UUID(message_id))

    async def defer(self, message_id: str, *, until: timedelta) -> None:
        """Keep the sweeper away while JetStream holds the message for a delayed redelivery."""
        await messages.defer_routing(self._pool, uuid.UUID(message_id), until=until)

    async def claim_stalled(self, *, stall: timedelta, limit: int = 500) -> list[str]:
        """Messages due for routing whose task may be lost; pushes their due time out by `stall`
        so one sweep's claim is not repeated by the next (or by another replica)."""
        return [str(mid) for mid in await messages.claim_stalled(self._pool, stall=stall, limit=limit)]


def _route_row(row: asyncpg.Record) -> RouteRow:
    return RouteRow(
        id=str(row["id"]),
        tenant_id=str(row["tenant_id"]),
        state=MessageState(row["state"]),
        request=row["request"],
        stream=row["stream"],
        tags=list(row["tags"]),
        metadata=row["metadata"],
        create_time=row["create_time"],
        send_time=row["send_time"],
        recipients=[
            (int(position), str(address), RecipientState(state))
            for position, address, state in json.loads(row["recipients"])
        ],
        template_versions=row["template_versions"],
        rendered_parts=row["rendered_parts"],
    )

"""PostgreSQL access for delivery: leases, outcomes and the retry scheduler; the statements
themselves are libs.pipeline's."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from postwire.internal.v1 import bus_pb2

from libs.coalesce import Coalescer
from libs.event_outbox import insert_events
from libs.failures import dependency_failure
from libs.pipeline import recipients
from libs.pipeline.recipients import Outcome

__all__ = ["Claim", "ClaimedRecipient", "Outcome", "WorkerStore"]


@dataclass(frozen=True, slots=True)
class ClaimedRecipient:
    position: int
    address: str
    attempts: int
    first_attempt_time: datetime | None


@dataclass(frozen=True, slots=True)
class Claim:
    message_id: str
    tenant_id: str
    stream: str
    tags: list[str]
    metadata: str
    mime: bytes
    envelope_from: str
    recipients: list[ClaimedRecipient]
    sandbox: bool = False
    # The tenant's require_tls: only verified TLS, never plain text.
    require_tls: bool = False


def _outage(exc: Exception) -> bool:
    return dependency_failure(exc) is not None


class WorkerStore:
    """Each handler claims its own message; the claims of one fetched batch share one statement
    (libs.coalesce): one round trip per batch rather than four per message."""

    def __init__(self, pool: asyncpg.Pool, *, batch: int = 64) -> None:
        self._pool = pool
        self._claims: Coalescer[tuple[uuid.UUID, timedelta], Claim | None] = Coalescer(
            self._claim_batch, max_batch=batch, outage=_outage
        )

    async def claim(self, message_id: str, *, lease: timedelta) -> Claim | None:
        """Lease the message's queued recipients; None if there are none (done, or leased elsewhere)."""
        return await self._claims.load((uuid.UUID(message_id), lease))

    async def _claim_batch(self, keys: Sequence[tuple[uuid.UUID, timedelta]]) -> list[Claim | None]:
        found: dict[uuid.UUID, Claim] = {}
        async with self._pool.acquire() as conn:
            # Normally one lease for the whole batch (the consumer's AckWait).
            for lease in dict.fromkeys(lease for _, lease in keys):
                ids = list(dict.fromkeys(mid for mid, each in keys if each == lease))
                for row in await recipients.lease_many_queued(conn, ids, lease=lease):
                    found[row["id"]] = _claim(row)
        # A task delivered twice in one batch: only the first copy gets the claim, as when two
        # workers race for it.
        return [found.pop(mid, None) for mid, _ in keys]

    async def close(self) -> None:
        await self._claims.close()

    async def renew(self, message_id: str, positions: Sequence[int], *, lease: timedelta) -> None:
        await recipients.renew_lease(self._pool, uuid.UUID(message_id), positions, lease=lease)

    async def record(self, outcomes: Sequence[Outcome], events: Sequence[bus_pb2.EventEnvelope]) -> None:
        """Commit outcomes of any number of messages, and their events, in one transaction.

        Only a recipient still queued is updated, so a replayed batch changes nothing twice."""
        async with self._pool.acquire() as conn, conn.transaction():
            await recipients.record_outcomes(conn, outcomes)
            await insert_events(conn, events)

    async def release(self, message_id: str, positions: Sequence[int]) -> None:
        """Hand leased recipients back untouched (no attempt counted), due at once, so another
        worker (or this one after a restart) takes them without waiting for the lease to run out."""
        await recipients.release(self._pool, uuid.UUID(message_id), positions)

    async def postpone(self, message_id: str, positions: Sequence[int], *, delay: timedelta) -> None:
        """Hand leased recipients back untouched (no attempt counted), due after `delay`. The lease
        is left to run out with it, which marks them for the retry lane (see claim_due)."""
        await recipients.postpone(self._pool, uuid.UUID(message_id), positions, delay=delay)

    async def claim_due(self, *, stall: timedelta, limit: int = 500) -> list[tuple[str, bool]]:
        """Recipients whose retry is due, or whose task looks lost, go back to queued; their
        due time moves out by `stall` so the next sweep (or another replica) does not repeat it.

        Returns (message id, retry) pairs: `retry` when a worker has had the message before (a
        deferral, a lease that ran out, a destination that was busy), so it goes to the retry lane;
        work no worker has touched yet (a lost or wiped publish) goes back to the main lane."""
        retry: dict[str, bool] = {}
        for mid, again in await recipients.claim_due(self._pool, stall=stall, limit=limit):
            key = str(mid)
            retry[key] = retry.get(key, False) or again
        return sorted(retry.items())


def _claim(row: asyncpg.Record) -> Claim:
    return Claim(
        message_id=str(row["id"]),
        tenant_id=str(row["tenant_id"]),
        stream=row["stream"],
        tags=list(row["tags"]),
        metadata=row["metadata"],
        mime=row["mime"],
        envelope_from=row["envelope_from"],
        sandbox=row["sandbox"],
        require_tls=row["require_tls"],
        recipients=[
            ClaimedRecipient(position, address, attempts, first)
            for position, address, attempts, first in zip(
                row["positions"], row["addresses"], row["attempts"], row["first_attempt_times"], strict=True
            )
        ],
    )

"""Deliveries leased to this dispatcher that wait in memory for a slot of their webhook; pure.

A burst of events for one webhook is leased in the transaction that stores it, but only
`per_webhook` requests may be in flight. Giving the rest back to PostgreSQL meant, for every
finished attempt, a claim query that leased the rows again and released all but one (a round
trip each): the burst went through the database once per attempt. Here they wait in order, and
a finished attempt starts the next one of its webhook with no query at all.

A lease only holds for so long: an entry past its `start_by` is handed back as stale rather
than started, so an attempt never runs on a lease that may expire under it (another replica
would send it too). The backlog is bounded per webhook and in all, so a hanging endpoint holds
a bounded amount of memory; what does not fit goes back to the database as before.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

from services.events.webhook_records import Claim

__all__ = ["Backlog"]


class Backlog:
    def __init__(self, *, per_webhook: int, total: int, clock: Callable[[], float]) -> None:
        self._per_webhook = per_webhook
        self._total = total
        self._clock = clock
        self._queues: dict[str, deque[tuple[float, Claim]]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def holds(self, webhook_id: str) -> bool:
        return webhook_id in self._queues

    def add(self, claim: Claim, *, start_by: float) -> bool:
        """Queue `claim` behind its webhook's others; False (not queued) when full."""
        queue = self._queues.get(claim.webhook_id)
        if self._size >= self._total or (queue is not None and len(queue) >= self._per_webhook):
            return False
        if queue is None:
            queue = self._queues[claim.webhook_id] = deque()
        queue.append((start_by, claim))
        self._size += 1
        return True

    def webhooks(self) -> Iterator[str]:
        """Webhooks with queued claims, oldest queue first (a snapshot: safe to pop while iterating)."""
        return iter(list(self._queues))

    def pop(self, webhook_id: str, stale: list[Claim]) -> Claim | None:
        """The webhook's next claim that may still start; those past their `start_by` on the
        way are appended to `stale` (for the caller to give back to the database)."""
        queue = self._queues.get(webhook_id)
        now = self._clock()
        found: Claim | None = None
        while queue and found is None:
            start_by, claim = queue.popleft()
            self._size -= 1
            if start_by >= now:
                found = claim
            else:
                stale.append(claim)
        if queue is not None and not queue:
            del self._queues[webhook_id]
        return found

    def drain(self) -> list[Claim]:
        """Everything queued, emptied (at stop, to give back to the database)."""
        claims = [claim for queue in self._queues.values() for _, claim in queue]
        self._queues.clear()
        self._size = 0
        return claims

"""How many SMTP transactions one destination (recipient domain) may hold at once; pure.

A destination that answers slowly (a tarpit) or not at all would otherwise fill every slot of a
worker and delay mail to everyone else. Past its share a message is not waited for in a slot: it
is handed back and retried through the retry lane after about one of the destination's recent
transaction times, so a busy but fast destination (a big mailbox provider in a burst) is tried
again within a second, and a tarpit's backlog is not spun through the database every second.

A destination known to be fast is the exception: there a slot frees within a transaction time,
so a message waits for one here (a few transaction times, never less than a postponed message
would, and no more waiters than slots) rather than pay a round of postpone → scheduler → retry
lane → claim in PostgreSQL and NATS. A
burst to one big mailbox provider is the common case, and in the production-shaped bench half
of all messages took that round (0.52 postpone transactions per message). A destination whose
transaction time is unknown or slow is never waited for, so a tarpit still cannot hold the
worker's other slots.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Iterable

__all__ = ["DestinationSlots", "destination"]


def destination(address: str) -> str:
    """The destination an address is delivered to: its domain, case-folded."""
    return address.rpartition("@")[2].lower()


# A destination counts as fast (worth waiting for in process) up to this typical transaction
# time; a waiter gives up after this many of them, and never waits longer than MAX_QUEUE_WAIT.
# (Transaction times are measured by the worker, so CPU contention on its host counts too: on a
# busy 2-core box a loopback sink's transactions took 0.4 s on average, and 0.5 s was too tight.)
FAST_TRANSACTION = 2.0
QUEUE_WAIT_TRANSACTIONS = 4
# Above this share of deferred transactions (a moving average) a destination is not waited for.
DEFERRING = 0.2
MAX_QUEUE_WAIT = 5.0


class DestinationSlots:
    def __init__(self, per_destination: int, *, min_wait: float = 0.5, max_wait: float = 60.0) -> None:
        self._limit = per_destination
        self._held: Counter[str] = Counter()
        self._min_wait = min_wait
        self._max_wait = max_wait
        # A moving average of each destination's transaction time, in seconds.
        self._typical: dict[str, float] = {}
        # A moving average of each destination's share of deferred transactions (0 to 1).
        self._deferring: dict[str, float] = {}
        # Messages waiting here for a slot, in arrival order, by destination.
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}
        self._stopped = False

    def take(self, destinations: Iterable[str]) -> bool:
        """Take one slot at every destination, or none if any of them is full."""
        wanted = set(destinations)
        if any(self._held[d] >= self._limit for d in wanted):
            return False
        self._held.update(wanted)
        return True

    async def take_soon(self, destinations: Iterable[str], *, longest: float = MAX_QUEUE_WAIT) -> bool:
        """take(), or at a full destination known to be fast, wait a few of its transaction times
        (never more than `longest` seconds) for a slot to free; False (nothing taken) when that
        does not happen or is not worth it."""
        wanted = set(destinations)
        if self.take(wanted):
            return True
        budget = min(longest, self.queue_wait(wanted))
        if budget <= 0 or self._stopped:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        full = [d for d in wanted if self._held[d] >= self._limit]
        while True:
            # Woken when a full destination gives a slot back; it may go to a newcomer that
            # called take() first, so check again rather than assume it is ours.
            woken: asyncio.Future[None] = loop.create_future()
            for d in full:
                self._waiters.setdefault(d, deque()).append(woken)
            try:
                await asyncio.wait({woken}, timeout=max(0.0, deadline - loop.time()))
            finally:
                for d in full:
                    queue = self._waiters.get(d)
                    if queue is not None:
                        if woken in queue:
                            queue.remove(woken)
                        if not queue:
                            del self._waiters[d]
            if self.stopped():  # (a method: mypy would keep the narrowing from before the await)
                return False
            if self.take(wanted):
                return True
            full = [d for d in wanted if self._held[d] >= self._limit]
            if loop.time() >= deadline:
                return False

    def queue_wait(self, destinations: Iterable[str]) -> float:
        """Seconds a message may wait here for a slot at `destinations`: 0 unless every full one
        is known to be fast, is not deferring mail, and has fewer waiters than slots."""
        budget = MAX_QUEUE_WAIT
        for d in destinations:
            if self._held[d] < self._limit:
                continue
            typical = self._typical.get(d)
            if typical is None or typical > FAST_TRANSACTION:
                return 0.0
            if self._deferring.get(d, 0.0) > DEFERRING:
                # A destination pushing back (4xx) is fast at saying no: queueing its mail here
                # would hold worker slots other mail needs, and its retries wait anyway.
                return 0.0
            if len(self._waiters.get(d, ())) >= self._limit:
                return 0.0
            # Never less than a postponed message's own wait (wait_hint's floor): at the start of
            # a burst the slots come back in groups, when the outcome recorder commits, so a
            # few lone-transaction times can be too short, and the retry lane is never sooner.
            budget = min(budget, max(self._min_wait, QUEUE_WAIT_TRANSACTIONS * max(typical, 0.01)))
        return budget

    def stopped(self) -> bool:
        return self._stopped

    def stop_waiting(self) -> None:
        """Shutdown: every waiting message gives up now, and none waits from here on."""
        self._stopped = True
        for queue in self._waiters.values():
            for waiter in queue:
                if not waiter.done():
                    waiter.set_result(None)

    def give_back(self, destinations: Iterable[str], *, took: float | None, deferred: bool = False) -> None:
        """Return the slots taken for a transaction that lasted `took` seconds (None: none ran);
        `deferred` when the destination deferred any of it."""
        for d in set(destinations):
            self._held[d] -= 1
            if self._held[d] <= 0:
                del self._held[d]
            if took is not None:
                previous = self._typical.get(d)
                self._typical[d] = took if previous is None else 0.8 * previous + 0.2 * took
                share = self._deferring.get(d, 0.0)
                self._deferring[d] = 0.8 * share + (0.2 if deferred else 0.0)
            queue = self._waiters.get(d)
            while queue:
                first = queue.popleft()
                if not first.done():
                    first.set_result(None)
                    break

    def wait_hint(self, destinations: Iterable[str]) -> float:
        """Seconds until a slot is likely free at the slowest of `destinations`: about one of its
        recent transaction times, within [min_wait, max_wait]; min_wait before any is known."""
        typical = max((self._typical.get(d, 0.0) for d in destinations), default=0.0)
        return min(self._max_wait, max(self._min_wait, typical))

    def held(self, destination: str) -> int:
        return self._held[destination]

"""How many calls a server runs at once, and how long a call past that may wait for a turn.

Past capacity a Python server that takes every call gets slower for all of them: each new call
adds event-loop work, the queue in front of the database grows, and every caller's latency goes
past its deadline. Refusing the excess at once keeps the accepted calls at their normal latency
and tells the refused ones to come back (libs.grpcx.overload answers RESOURCE_EXHAUSTED with
RetryInfo). The waiting line itself is bounded too, so a burst cannot build an unbounded queue
of parked calls.

A caller waits only when a turn is likely to come in time: the line holds no more callers than
slots the recent completion rate frees within `max_wait`. Past that, waiting would only turn a
refusal that could be answered at once into one answered `max_wait` later (at three times
capacity, nearly every refused call used to wait out the whole bound first).

Pure asyncio: no gRPC here, so the admission rules are unit-tested on their own.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from time import monotonic

__all__ = ["InFlightLimit"]

# Weight of the newest gap between completions in the running average, and the longest gap it
# counts (an idle minute must not make the next burst look as if nothing ever completes).
_GAP_WEIGHT = 0.1
_MAX_GAP_SECONDS = 1.0


class InFlightLimit:
    """At most `limit` holders at once; a caller past that waits up to `max_wait` seconds (in
    arrival order, at most `max_waiting` callers at a time) and is refused after that.

    `enter()` returns True with a slot held (the caller must `leave()`), or False: refused, no
    slot held. A slot freed by `leave()` goes straight to the longest waiter, so a newcomer never
    overtakes a caller already in line. `full()` says, without waiting, that `enter()` would
    refuse at once.
    """

    def __init__(self, limit: int, *, max_wait: float, max_waiting: int | None = None) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.max_wait = max(0.0, max_wait)
        # Default: as many waiters as holders; more would only wait longer than max_wait anyway
        # when calls take longer than max_wait.
        self.max_waiting = limit if max_waiting is None else max(0, max_waiting)
        self._held = 0
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._last_leave: float | None = None
        self._gap: float | None = None  # running average of the time between completions

    @property
    def in_flight(self) -> int:
        return self._held

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def full(self) -> bool:
        return self._held >= self.limit and len(self._waiters) >= self._line_bound()

    def _line_bound(self) -> int:
        """Callers worth keeping in line: as many as completions expected within max_wait, at
        least one (a slow server still hands a turn on now and then), at most max_waiting."""
        if self.max_wait <= 0:
            return 0
        if not self._gap:
            return self.max_waiting  # no completion seen yet: nothing to judge by
        return min(self.max_waiting, max(1, math.floor(self.max_wait / self._gap)))

    async def enter(self) -> bool:
        if self._held < self.limit and not self._waiters:
            self._held += 1
            return True
        if len(self._waiters) >= self._line_bound():
            return False
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(turn)
        expiry = loop.call_later(self.max_wait, self._expire, turn)
        try:
            return await turn
        except asyncio.CancelledError:
            # Cancelled after leave() handed this caller a slot: give it to the next one.
            if turn.done() and not turn.cancelled() and turn.result():
                self.leave()
            raise
        finally:
            expiry.cancel()
            if turn in self._waiters:
                self._waiters.remove(turn)

    def leave(self) -> None:
        now = monotonic()
        if self._last_leave is not None:
            gap = min(now - self._last_leave, _MAX_GAP_SECONDS)
            self._gap = gap if self._gap is None else self._gap + _GAP_WEIGHT * (gap - self._gap)
        self._last_leave = now
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(True)  # the slot passes on; the count of holders stays
                return
        self._held = max(0, self._held - 1)

    def _expire(self, turn: asyncio.Future[bool]) -> None:
        if not turn.done():
            turn.set_result(False)
        if turn in self._waiters:
            self._waiters.remove(turn)

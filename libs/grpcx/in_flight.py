"""How many calls a server runs at once, and how long a call past that may wait for a turn.

Past capacity a Python server that takes every call gets slower for all of them: each new call
adds event-loop work, the queue in front of the database grows, and every caller's latency goes
past its deadline. Refusing the excess at once keeps the accepted calls at their normal latency
and tells the refused ones to come back (libs.grpcx.overload answers RESOURCE_EXHAUSTED with
RetryInfo). The waiting line itself is bounded too, so a burst cannot build an unbounded queue
of parked calls.

Pure asyncio: no gRPC here, so the admission rules are unit-tested on their own.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["InFlightLimit"]


class InFlightLimit:
    """At most `limit` holders at once; a caller past that waits up to `max_wait` seconds (in
    arrival order, at most `max_waiting` callers at a time) and is refused after that.

    `enter()` returns True with a slot held (the caller must `leave()`), or False: refused, no
    slot held. A slot freed by `leave()` goes straight to the longest waiter, so a newcomer never
    overtakes a caller already in line.
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

    @property
    def in_flight(self) -> int:
        return self._held

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def enter(self) -> bool:
        if self._held < self.limit and not self._waiters:
            self._held += 1
            return True
        if self.max_wait <= 0 or len(self._waiters) >= self.max_waiting:
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

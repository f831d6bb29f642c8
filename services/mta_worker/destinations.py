"""How many SMTP transactions one destination (recipient domain) may hold at once; pure.

A destination that answers slowly (a tarpit) or not at all would otherwise fill every slot of a
worker and delay mail to everyone else. Past its share a message is not waited for in a slot: it
is handed back and retried through the retry lane after about one of the destination's recent
transaction times, so a busy but fast destination (a big mailbox provider in a burst) is tried
again within a second, and a tarpit's backlog is not spun through the database every second.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

__all__ = ["DestinationSlots", "destination"]


def destination(address: str) -> str:
    """The destination an address is delivered to: its domain, case-folded."""
    return address.rpartition("@")[2].lower()


class DestinationSlots:
    def __init__(self, per_destination: int, *, min_wait: float = 0.5, max_wait: float = 60.0) -> None:
        self._limit = per_destination
        self._held: Counter[str] = Counter()
        self._min_wait = min_wait
        self._max_wait = max_wait
        # A moving average of each destination's transaction time, in seconds.
        self._typical: dict[str, float] = {}

    def take(self, destinations: Iterable[str]) -> bool:
        """Take one slot at every destination, or none if any of them is full."""
        wanted = set(destinations)
        if any(self._held[d] >= self._limit for d in wanted):
            return False
        self._held.update(wanted)
        return True

    def give_back(self, destinations: Iterable[str], *, took: float) -> None:
        """Return the slots taken for a transaction that lasted `took` seconds."""
        for d in set(destinations):
            self._held[d] -= 1
            if self._held[d] <= 0:
                del self._held[d]
            previous = self._typical.get(d)
            self._typical[d] = took if previous is None else 0.8 * previous + 0.2 * took

    def wait_hint(self, destinations: Iterable[str]) -> float:
        """Seconds until a slot is likely free at the slowest of `destinations`: about one of its
        recent transaction times, within [min_wait, max_wait]; min_wait before any is known."""
        typical = max((self._typical.get(d, 0.0) for d in destinations), default=0.0)
        return min(self._max_wait, max(self._min_wait, typical))

    def held(self, destination: str) -> int:
        return self._held[destination]

"""How many SMTP transactions one destination (recipient domain) may hold at once; pure.

A destination that answers slowly (a tarpit) or not at all would otherwise fill every slot of a
worker and delay mail to everyone else. Past its share a message is not waited for in a slot: it
is handed back and retried through the retry lane.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

__all__ = ["DestinationSlots", "destination"]


def destination(address: str) -> str:
    """The destination an address is delivered to: its domain, case-folded."""
    return address.rpartition("@")[2].lower()


class DestinationSlots:
    def __init__(self, per_destination: int) -> None:
        self._limit = per_destination
        self._held: Counter[str] = Counter()

    def take(self, destinations: Iterable[str]) -> bool:
        """Take one slot at every destination, or none if any of them is full."""
        wanted = set(destinations)
        if any(self._held[d] >= self._limit for d in wanted):
            return False
        self._held.update(wanted)
        return True

    def give_back(self, destinations: Iterable[str]) -> None:
        for d in set(destinations):
            self._held[d] -= 1
            if self._held[d] <= 0:
                del self._held[d]

    def held(self, destination: str) -> int:
        return self._held[destination]

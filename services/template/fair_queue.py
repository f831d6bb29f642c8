"""Who renders next: first come, first served, except that no tenant holds more than its share of
the workers. Pure bookkeeping, no I/O; the pool asks it whom to hand a free worker to."""

from __future__ import annotations

from collections import Counter
from typing import Generic, TypeVar

__all__ = ["FairQueue", "tenant_share"]

T = TypeVar("T")


def tenant_share(workers: int) -> int:
    """At most half the workers per tenant, so a tenant whose renders all spin leaves the rest
    of the pool to everyone else; one worker is always allowed."""
    return max(1, workers // 2)


class FairQueue(Generic[T]):
    """Waiting tickets in arrival order. A tenant at its share is skipped, not queued behind:
    its waiters keep their place while later tenants' tickets go ahead."""

    def __init__(self, per_tenant: int) -> None:
        self._per_tenant = per_tenant
        self._running: Counter[str] = Counter()
        self._waiting: list[tuple[str, T]] = []

    def wait(self, tenant: str, ticket: T) -> None:
        self._waiting.append((tenant, ticket))

    def cancel(self, ticket: T) -> None:
        """A waiter that gave up (its call was cancelled) before it was given a worker."""
        self._waiting = [(t, w) for t, w in self._waiting if w is not ticket]

    def next(self) -> tuple[str, T] | None:
        """The first waiter whose tenant is under its share, now counted as running."""
        for i, (tenant, ticket) in enumerate(self._waiting):
            if self._running[tenant] < self._per_tenant:
                del self._waiting[i]
                self._running[tenant] += 1
                return tenant, ticket
        return None

    def finish(self, tenant: str) -> None:
        self._running[tenant] -= 1
        if self._running[tenant] <= 0:
            del self._running[tenant]

    def running(self, tenant: str) -> int:
        return self._running[tenant]

    def __len__(self) -> int:
        return len(self._waiting)

"""The arithmetic of charging limits, on state read (and locked) from PostgreSQL; pure.

services/policy/store.py locks every row a call will touch, in one fixed order, reads them into a
Ledger, charges the sends in request order here, and writes back what changed in the same
transaction: the state every replica sees stays the one in PostgreSQL, and many sends cost one
transaction instead of one each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from services.policy.limits import Limits, Refusal, oversize_refusal, quota_refusal, rate_refusal

__all__ = ["PERIODS", "Charge", "Ledger", "QuotaKey", "RateKey", "quota_keys", "rate_keys"]

# One charge: a limit and how many recipients it is charged with.
Charge = tuple[Limits, int]
RateKey = tuple[str, str]  # tenant id, stream
QuotaKey = tuple[str, str, str]  # tenant id, stream, period
PERIODS = ("day", "month")


def _quotas(limit: Limits) -> list[tuple[str, int]]:
    return [
        (period, quota)
        for period, quota in zip(PERIODS, (limit.recipients_per_day, limit.recipients_per_month), strict=True)
        if quota > 0
    ]


def rate_keys(sends: Sequence[tuple[str, Sequence[Charge]]]) -> list[RateKey]:
    """The GCRA rows the sends touch, sorted: every replica locks them in this order."""
    return sorted(
        {
            (tenant, limit.stream)
            for tenant, charges in sends
            for limit, _ in charges
            if limit.recipients_per_second > 0
        }
    )


def quota_keys(sends: Sequence[tuple[str, Sequence[Charge]]]) -> list[QuotaKey]:
    """The quota rows the sends touch, sorted likewise."""
    return sorted(
        {
            (tenant, limit.stream, period)
            for tenant, charges in sends
            for limit, _ in charges
            for period, _ in _quotas(limit)
        }
    )


class Ledger:
    """Rate and quota state at `now`; `charge` takes a send's charges from it all or none."""

    def __init__(self, now: datetime, tats: Mapping[RateKey, datetime], used: Mapping[QuotaKey, int]) -> None:
        self.now = now
        self.tats = dict(tats)
        self.used = dict(used)
        self.changed_tats: set[RateKey] = set()
        self.changed_used: set[QuotaKey] = set()

    def charge(self, tenant_id: str, charges: Sequence[Charge]) -> Refusal | None:
        """Every charge, or none and the first refusal, checked in the order given (each limit's
        rate before its quotas)."""
        tats: dict[RateKey, datetime] = {}
        used: dict[QuotaKey, int] = {}
        for limit, n in charges:
            refusal = self._rate(tenant_id, limit, n, tats) or self._quota(tenant_id, limit, n, used)
            if refusal is not None:
                return refusal
        self.tats.update(tats)
        self.used.update(used)
        self.changed_tats.update(tats)
        self.changed_used.update(used)
        return None

    def _rate(self, tenant_id: str, limit: Limits, n: int, tats: dict[RateKey, datetime]) -> Refusal | None:
        if limit.recipients_per_second <= 0:
            return None
        burst = limit.effective_burst
        if n > burst:
            return oversize_refusal(limit, n)
        key = (tenant_id, limit.stream)
        cost = n * limit.emission_interval
        window = burst * limit.emission_interval
        # GCRA: admit while the theoretical arrival time, pushed on by this send, stays within
        # one burst of now.
        start = max(self.tats[key], self.now)
        tat = start + timedelta(seconds=cost)
        if tat > self.now + timedelta(seconds=window):
            wait = (start - self.now).total_seconds() + cost - window
            return rate_refusal(limit, n, max(wait, limit.emission_interval))
        tats[key] = tat
        return None

    def _quota(self, tenant_id: str, limit: Limits, n: int, used: dict[QuotaKey, int]) -> Refusal | None:
        for period, quota in _quotas(limit):
            if n > quota:
                return quota_refusal(limit, period, quota, 0, n, self.now)
            key = (tenant_id, limit.stream, period)
            current = self.used[key]
            if current + n > quota:
                return quota_refusal(limit, period, quota, current, n, self.now)
            used[key] = current + n
        return None

"""Tenant limits: validation, which limits apply to a send, and how refusals read; pure.

The arithmetic that decides runs inside PostgreSQL (services/policy/store.py) so that every policy
replica sees one state; this module only prepares the numbers and words around it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from libs.mail.stream_names import NAME_RULE, name_problem

__all__ = [
    "ALL_STREAMS",
    "Limits",
    "Refusal",
    "applicable",
    "check_limits",
    "oversize_refusal",
    "quota_refusal",
    "rate_refusal",
    "seconds_until_period_end",
]

ALL_STREAMS = "*"
MAX_RATE = 1_000_000.0
_ADJECTIVE = {"day": "daily", "month": "monthly"}


@dataclass(frozen=True, slots=True)
class Limits:
    stream: str
    recipients_per_second: float = 0.0
    burst: int = 0
    recipients_per_day: int = 0
    recipients_per_month: int = 0

    @property
    def effective_burst(self) -> int:
        """The bucket size: as given, or one second's worth (at least 1) when only a rate is set."""
        if self.burst > 0:
            return self.burst
        return max(1, math.ceil(self.recipients_per_second))

    @property
    def emission_interval(self) -> float:
        """Seconds each recipient costs at the sustained rate."""
        return 1.0 / self.recipients_per_second

    @property
    def subject(self) -> str:
        return "tenant (all streams)" if self.stream == ALL_STREAMS else f"stream '{self.stream}'"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a send was refused: for QuotaFailure (subject, description) and RetryInfo."""

    subject: str
    description: str
    retry_after: float


def check_limits(limits: Sequence[Limits]) -> list[tuple[str, str]]:
    """Violations, as (field, description), for a tenant's full set of limits."""
    violations: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, limit in enumerate(limits):
        field = f"tenant.limits[{i}]"
        if limit.stream != ALL_STREAMS and name_problem(limit.stream):
            violations.append((f"{field}.stream", f"'*' or a stream name, {NAME_RULE}"))
        elif limit.stream in seen:
            violations.append((f"{field}.stream", f"stream '{limit.stream}' has limits twice"))
        seen.add(limit.stream)
        if not (0 <= limit.recipients_per_second <= MAX_RATE) or math.isnan(limit.recipients_per_second):
            violations.append((f"{field}.recipients_per_second", f"must be between 0 and {MAX_RATE:g}"))
        if limit.burst < 0:
            violations.append((f"{field}.burst", "must not be negative"))
        elif limit.burst and not limit.recipients_per_second:
            violations.append((f"{field}.burst", "a burst needs recipients_per_second"))
        if limit.recipients_per_day < 0:
            violations.append((f"{field}.recipients_per_day", "must not be negative"))
        if limit.recipients_per_month < 0:
            violations.append((f"{field}.recipients_per_month", "must not be negative"))
    return violations


def applicable(limits: Iterable[Limits], stream: str) -> list[Limits]:
    """The stream's own limits and the tenant-wide ones, in a fixed order (so replicas lock rows
    in the same order and never deadlock)."""
    return sorted((lim for lim in limits if lim.stream in (stream, ALL_STREAMS)), key=lambda lim: lim.stream)


def seconds_until_period_end(period: str, now: datetime) -> float:
    """Seconds until the UTC day or month that `now` falls in is over."""
    now = now.astimezone(UTC)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        end = day_start + timedelta(days=1)
    else:
        first = day_start.replace(day=1)
        end = (
            first.replace(year=first.year + 1, month=1)
            if first.month == 12
            else first.replace(month=first.month + 1)
        )
    return max(0.0, (end - now).total_seconds())


def rate_refusal(limit: Limits, requested: int, retry_after: float) -> Refusal:
    return Refusal(
        subject=limit.subject,
        description=(
            f"rate limit of {limit.recipients_per_second:g} recipients/s with a burst of {limit.effective_burst}:"
            f" {requested} recipients requested"
        ),
        retry_after=retry_after,
    )


def oversize_refusal(limit: Limits, requested: int) -> Refusal:
    """A send larger than the whole burst can never pass; waiting would not help."""
    return Refusal(
        subject=limit.subject,
        description=(
            f"{requested} recipients in one send exceed the burst of {limit.effective_burst}"
            f" at {limit.recipients_per_second:g} recipients/s"
        ),
        retry_after=0.0,
    )


def quota_refusal(
    limit: Limits, period: str, quota: int, used: int, requested: int, now: datetime
) -> Refusal:
    return Refusal(
        subject=limit.subject,
        description=f"{_ADJECTIVE[period]} quota of {quota} recipients: {used} used, {requested} requested",
        retry_after=seconds_until_period_end(period, now),
    )

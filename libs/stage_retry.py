"""How often a pipeline stage tries one piece of work again, and when it stops; pure.

Two kinds of failure, split by `libs.failures`: a dependency that is down (PostgreSQL, NATS, the
template service) is no fault of the message, so it never counts as an attempt and is retried
until the message's give-up time; anything else is treated as a bug that may be specific to this
message, so it counts, and after `max_attempts` the work is failed instead of retried forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["StageRetry", "failure_reason"]


@dataclass(frozen=True, slots=True)
class StageRetry:
    max_attempts: int = 5
    base_seconds: float = 2.0
    max_seconds: float = 300.0
    # Outages are retried on a shorter cap so work resumes soon after the dependency returns.
    unavailable_max_seconds: float = 30.0
    give_up_after: timedelta = timedelta(days=5)

    def delay(self, attempts: int) -> float:
        """Seconds before the next try after `attempts` counted failures (1 = the first)."""
        return min(self.max_seconds, self.base_seconds * 2.0 ** min(max(0, attempts - 1), 60))

    def unavailable_delay(self, deliveries: int) -> float:
        """Seconds before the next try after the `deliveries`-th delivery met an outage."""
        cap = min(self.max_seconds, self.unavailable_max_seconds)
        return min(cap, self.base_seconds * 2.0 ** min(max(0, deliveries - 1), 60))

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts

    def give_up_time(self, start: datetime) -> datetime:
        return start + self.give_up_after


def failure_reason(stage: str, exc: BaseException) -> str:
    """`<stage>: <error class>`; never the exception text, which may carry addresses or secrets."""
    return f"{stage}: {type(exc).__name__}"

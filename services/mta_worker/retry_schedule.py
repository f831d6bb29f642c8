"""When to try a deferred recipient again, and when to give up; pure.

Exponential from `base`, doubling per attempt, capped, with ±20 % jitter so a destination that
deferred many messages at once is not hit by all of them at the same instant (RELIABILITY N12).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["LOST_REPLY_FACTOR", "RetryPolicy"]

LOST_REPLY_FACTOR = 4.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_seconds: float = 60.0
    max_seconds: float = 3600.0
    give_up_after: timedelta = timedelta(days=5)
    jitter: float = 0.2

    def delay(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1 = the first attempt)."""
        # The exponent is capped first: 2**1024 would overflow a float long before the cap applies.
        raw = min(self.max_seconds, self.base_seconds * 2.0 ** min(max(0, attempt - 1), 60))
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, raw * (1 + spread))

    def delay_after_lost_reply(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait when the reply to the final "." never came: four times the ordinary
        delay (even past the cap), so a relay that is slow rather than gone has long finished with
        the copy it may already hold before a second one is offered."""
        raw = min(self.max_seconds, self.base_seconds * 2.0 ** min(max(0, attempt - 1), 60))
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, LOST_REPLY_FACTOR * raw * (1 + spread))

    def expired(self, first_attempt: datetime, now: datetime) -> bool:
        return now - first_attempt >= self.give_up_after

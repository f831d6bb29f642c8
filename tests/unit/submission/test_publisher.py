"""The publisher's late publishes are bounded: a NATS that hangs cannot collect a task per call."""

from __future__ import annotations

import asyncio
from typing import Any

from services.submission.publisher import Publisher


class HangingBus:
    """A bus whose publishes never finish (a NATS that accepts the connection and goes silent)."""

    def __init__(self) -> None:
        self.publishes = 0
        self.never = asyncio.Event()

    async def publish(self, subject: str, payload: bytes, **kwargs: Any) -> None:
        self.publishes += 1
        await self.never.wait()


async def test_late_publishes_stop_at_the_bound_and_the_rest_is_left_to_the_sweepers() -> None:
    bus = HangingBus()
    publisher = Publisher(bus, budget=0.001, max_late=3)  # type: ignore[arg-type]
    for n in range(10):
        # Each call still returns within its budget.
        await asyncio.wait_for(publisher.publish_after_commit(f"m{n}", [], route=True), 1)
    assert publisher.late == 3
    assert bus.publishes == 3  # the seven past the bound did not even start
    bus.never.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert publisher.late == 0

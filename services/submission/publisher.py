"""The accept use case's Publisher port over JetStream: the route task and the first events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from postwire.internal.v1 import bus_pb2

from libs.bus import ROUTE_SUBJECT, Bus
from libs.event_outbox import publish_events
from services.submission.accept_batch import Outgoing

__all__ = ["MAX_LATE_PUBLISHES", "PUBLISH_BUDGET_SECONDS", "Publisher"]

_log = logging.getLogger(__name__)
# How long SendEmail waits, after its commit, for the route task and events to reach NATS. The
# message is durable already; a publish that misses this budget is the sweepers' job, so a slow
# or absent NATS never holds up the caller (issue 9 item 4: p99 <= 0.5 s during an outage).
PUBLISH_BUDGET_SECONDS = 0.25
# Publishes allowed to run on past the budget. A NATS that hangs would otherwise collect one task
# per accepted call until each times out; past this the publish is left to the sweepers (the
# message and its events are already durable in PostgreSQL), which is where it would end anyway.
MAX_LATE_PUBLISHES = 256


_Item = tuple[str, Sequence[bus_pb2.EventEnvelope], bool]  # message id, events, route task or not


class Publisher:
    def __init__(
        self, bus: Bus, *, budget: float = PUBLISH_BUDGET_SECONDS, max_late: int = MAX_LATE_PUBLISHES
    ) -> None:
        self._bus = bus
        self._budget = budget
        self._max_late = max_late
        # Publishes still running past the budget; held so the event loop does not drop them.
        self._late: set[asyncio.Future[Any]] = set()
        # The SendEmail calls one group commit answers resume in the same loop turn: their
        # publishes go out together on the next turn, under one budget, rather than each call
        # with its own tasks and timer.
        self._gathering: list[_Item] = []
        self._gathered: asyncio.Future[None] | None = None

    @property
    def late(self) -> int:
        return len(self._late)

    async def publish_after_commit(
        self, message_id: str, events: Sequence[bus_pb2.EventEnvelope], *, route: bool
    ) -> None:
        gathered = self._gathered
        if gathered is None:
            loop = asyncio.get_running_loop()
            gathered = self._gathered = loop.create_future()
            loop.call_soon(self._send_gathered)
        self._gathering.append((message_id, events, route))
        await asyncio.shield(gathered)

    async def publish_many_after_commit(self, outgoing: Sequence[Outgoing]) -> None:
        """A batch's route tasks and events all in flight at once (pipelined, not one awaited
        publish after another), within the same single budget."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._start([(o.message_id, o.events, o.route) for o in outgoing], done)
        await asyncio.shield(done)

    def _send_gathered(self) -> None:
        items, done = self._gathering, self._gathered
        self._gathering, self._gathered = [], None
        if done is not None:
            self._start(items, done)

    def _start(self, items: Sequence[_Item], done: asyncio.Future[None]) -> None:
        """Start the publishes of `items`; `done` is set when they are over or the budget is spent."""
        what = items[0][0] if len(items) == 1 else f"{len(items)} messages"
        if len(self._late) >= self._max_late:
            _log.warning("publishes for %s left to the sweepers: %d still running late", what, len(self._late))
            done.set_result(None)
            return
        publishes = [publish_events(self._bus, [e for _, events, _ in items for e in events])]
        publishes.extend(self._publish_route(message_id) for message_id, _, route in items if route)
        # Not cancelled at the budget: a NATS that is merely slow still gets the task (each
        # publish ends at its own time-out), and the sweepers cover one that is away.
        task = asyncio.ensure_future(asyncio.gather(*publishes))
        self._late.add(task)
        task.add_done_callback(self._late.discard)

        def spent() -> None:
            if not done.done():
                _log.warning("publishes for %s left to finish late or to the sweepers", what)
                done.set_result(None)

        timer = asyncio.get_running_loop().call_later(self._budget, spent)

        def over(_: object) -> None:
            timer.cancel()
            if not done.done():
                done.set_result(None)

        task.add_done_callback(over)

    async def _publish_route(self, message_id: str) -> None:
        try:
            await self._bus.publish(
                ROUTE_SUBJECT,
                bus_pb2.RouteTask(message_id=message_id).SerializeToString(),
                msg_id=f"{message_id}:route",
            )
        except Exception as exc:
            _log.warning("route publish for %s left to the sweeper: %s", message_id, type(exc).__name__)

"""The inbound use case: one accepted message → a decision (feedback.decide) → the recipient
move and its event in one transaction → publish after commit. Ports are given, so a unit test
runs it with fakes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from postwire.internal.v1 import bus_pb2

from services.inbound.feedback import AsyncBounce, Complaint, Dropped, decide
from services.inbound.recipients import Kind, Rcpt, TokenOpener

__all__ = ["ReportStore", "TakeReport"]

_log = logging.getLogger(__name__)

Event = bus_pb2.EventEnvelope


class ReportStore(Protocol):
    async def record_bounce(self, bounce: AsyncBounce, /) -> tuple[str, Event | None]: ...

    async def record_complaint(self, complaint: Complaint, /) -> tuple[str, Event | None]: ...

    async def count(self, name: str, /) -> None: ...


class TakeReport:
    def __init__(
        self, store: ReportStore, publish: Callable[[Sequence[Event]], Awaitable[None]], tokens: TokenOpener
    ) -> None:
        self._store = store
        self._publish = publish
        self._tokens = tokens

    async def __call__(self, raw: bytes, rcpts: Sequence[Rcpt]) -> str:
        """Returns the counter the report went to (bounced, complained, duplicate, malformed,
        unmatched, ignored). Raises only when the store does (the sender then retries)."""
        envelope_tokens = [r.token for r in rcpts if r.kind is Kind.RETURN_PATH]
        # Parsing up to 10 MB of untrusted MIME is CPU work: off the event loop, so the listener
        # keeps answering other sessions meanwhile.
        decision = await asyncio.to_thread(decide, raw, envelope_tokens, self._tokens)
        if isinstance(decision, Dropped):
            await self._store.count(decision.counter)
            # No addresses in the log: they are personal data.
            _log.info("inbound report dropped as %s: %s", decision.counter, decision.why)
            return decision.counter
        if isinstance(decision, AsyncBounce):
            counter, event = await self._store.record_bounce(decision)
        else:
            counter, event = await self._store.record_complaint(decision)
        _log.info(
            "inbound report for message %s recipient %d: %s",
            decision.target.message_id,
            decision.target.index,
            counter,
        )
        if event is not None:
            await self._publish([event])
        return counter

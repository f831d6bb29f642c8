"""Sends the suppressions the events service owes policy: due outbox rows, in batches per tenant.

A row leaves the outbox only once policy has stored its suppression (RecordSuppressions replaces
an existing entry, so sending one twice is harmless). Any failure keeps the row with a growing
back-off (suppression_rule.retry_delay). Policy refuses a whole batch for one bad entry, so a
batch that fails for any reason but an outage is retried one row at a time: one bad row must
not hold back the rest of its tenant's suppressions.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

from libs.errors import Unavailable
from services.events.suppression_rule import PendingSuppression, retry_delay

__all__ = ["SuppressionRelay"]

_log = logging.getLogger(__name__)
# Rows one claim takes; a drain repeats the claim until one comes back short.
BATCH = 500
# A claimed row is hidden from other replicas this long: longer than any RecordSuppressions call.
LEASE = timedelta(seconds=60)


class Outbox(Protocol):
    async def claim_due(self, *, limit: int, lease: timedelta) -> list[PendingSuppression]: ...

    async def done(self, event_ids: Sequence[str]) -> None: ...

    async def retry_later(self, delays: Sequence[tuple[str, float]], *, error: str) -> None: ...


class Policy(Protocol):
    async def record(self, tenant_id: str, items: Sequence[PendingSuppression]) -> None: ...


class SuppressionRelay:
    def __init__(self, outbox: Outbox, policy: Policy) -> None:
        self._outbox = outbox
        self._policy = policy

    async def drain(self) -> int:
        """Send every due row; returns how many policy stored."""
        total = 0
        while True:
            rows = await self._outbox.claim_due(limit=BATCH, lease=LEASE)
            by_tenant: dict[str, list[PendingSuppression]] = defaultdict(list)
            for row in rows:
                by_tenant[row.tenant_id].append(row)
            for tenant_id, items in by_tenant.items():
                total += await self._send(tenant_id, items)
            if len(rows) < BATCH:
                return total

    async def _send(self, tenant_id: str, items: Sequence[PendingSuppression]) -> int:
        try:
            await self._policy.record(tenant_id, items)
        except Exception as exc:
            if len(items) > 1 and not isinstance(exc, Unavailable):
                sent = 0
                for item in items:
                    sent += await self._send(tenant_id, [item])
                return sent
            await self._outbox.retry_later(
                [(item.event_id, retry_delay(item.attempts + 1)) for item in items], error=type(exc).__name__
            )
            # The error class only: the addresses are personal data, and the message may quote them.
            _log.warning(
                "%d suppression(s) of tenant %s kept for a retry: %s",
                len(items),
                tenant_id,
                type(exc).__name__,
            )
            return 0
        await self._outbox.done([item.event_id for item in items])
        return len(items)

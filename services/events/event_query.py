"""What a read of stored events asks for: the tenant, a position, filters; pure."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

__all__ = ["EventQuery"]


@dataclass(frozen=True, slots=True)
class EventQuery:
    tenant_id: str
    after_seq: int
    limit: int
    message_id: uuid.UUID | None = None
    recipient: str | None = None
    types: Sequence[int] = ()
    start_time: datetime | None = None
    end_time: datetime | None = None
    # Only events up to this seq (a stream's read horizon); None for no bound.
    up_to_seq: int | None = None

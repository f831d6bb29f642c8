"""The events API's filters, checked once for ListEvents, StreamEvents and the internal reader; pure."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from libs.errors import InvalidArgument
from services.events.kinds import EventType

__all__ = ["KNOWN_TYPES", "event_types", "optional_uuid"]

# Every EventType a filter may name, including those reserved for later (OPENED, CLICKED,
# UNSUBSCRIBED): a client may subscribe to them today and simply sees none yet.
KNOWN_TYPES = frozenset(EventType)


def event_types(values: Iterable[int]) -> list[int]:
    """The requested types, or INVALID_ARGUMENT on `types` for one that is not an EventType (proto3
    keeps unknown enum numbers, so a client built from a newer proto can send them)."""
    types = list(values)
    unknown = sorted({v for v in types if v not in KNOWN_TYPES})
    if unknown:
        raise InvalidArgument([("types", f"not an event type: {', '.join(map(str, unknown))}")])
    return types


def optional_uuid(value: str, *, field: str, what: str) -> uuid.UUID | None:
    """A filter or argument that names a message or tenant: None if empty, INVALID_ARGUMENT on
    `field` if it is not a UUID."""
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument([(field, f"not {what}")]) from None

"""The message outcome counters, counted where each event is first stored.

The events table's unique event id makes this the one place that sees every outcome exactly once,
whichever service produced it and however often the bus or a sweeper delivered it again; counting
in each producer would count an outcome twice when its publish is retried.
"""

from __future__ import annotations

from postwire.v1 import event_pb2, message_pb2

from libs import metrics

__all__ = ["count_stored"]

_PLAIN = {
    event_pb2.EVENT_TYPE_ACCEPTED: metrics.messages_accepted,
    event_pb2.EVENT_TYPE_DELIVERED: metrics.messages_delivered,
    event_pb2.EVENT_TYPE_FAILED: metrics.messages_failed,
    event_pb2.EVENT_TYPE_EXPIRED: metrics.messages_expired,
}
_BY_CATEGORY = {
    event_pb2.EVENT_TYPE_DEFERRED: metrics.messages_deferred,
    event_pb2.EVENT_TYPE_BOUNCED: metrics.messages_bounced,
}


def category_name(category: int) -> str:
    """`mailbox_full` for BOUNCE_CATEGORY_MAILBOX_FULL; `unspecified` for none."""
    try:
        name = message_pb2.BounceCategory.Name(category)  # type: ignore[arg-type]
    except ValueError:
        return "unknown"
    return name.removeprefix("BOUNCE_CATEGORY_").lower()


def count_stored(event: event_pb2.Event) -> None:
    """Count an event that was stored for the first time."""
    plain = _PLAIN.get(event.type)
    if plain is not None:
        plain.add(1)
        return
    by_category = _BY_CATEGORY.get(event.type)
    if by_category is not None:
        by_category.add(1, {"postwire.bounce.category": category_name(event.bounce_category)})

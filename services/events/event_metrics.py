"""The message outcome counters, counted where each event is first stored.

The events table's unique event id makes this the one place that sees every outcome exactly once,
whichever service produced it and however often the bus or a sweeper delivered it again; counting
in each producer would count an outcome twice when its publish is retried.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from opentelemetry.metrics import Counter as _Counter
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


def count_stored(events: Iterable[event_pb2.Event]) -> None:
    """Count events that were stored for the first time: one add per counter and label set of the
    batch rather than one per event (an add walks the SDK's attribute and view lookups)."""
    counts: Counter[tuple[_Counter, str | None]] = Counter()
    for event in events:
        plain = _PLAIN.get(event.type)
        if plain is not None:
            counts[plain, None] += 1
            continue
        by_category = _BY_CATEGORY.get(event.type)
        if by_category is not None:
            counts[by_category, category_name(event.bounce_category)] += 1
    for (counter, category), n in counts.items():
        if category is None:
            counter.add(n)
        else:
            counter.add(n, {"postwire.bounce.category": category})

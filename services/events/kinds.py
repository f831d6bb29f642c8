"""The events service's enums, built from the generated proto values so the two cannot drift:
each member's value IS the proto number (`EventType.DELIVERED == event_pb2.EVENT_TYPE_DELIVERED`),
so a member goes into a proto field or a `smallint` column as it is. tests/unit/events/test_kinds.py
checks that every proto value (but _UNSPECIFIED) has a member; pure."""

from __future__ import annotations

from enum import IntEnum

from postwire.v1 import event_pb2, webhook_service_pb2

__all__ = ["EMITTED_TYPES", "DeliveryState", "EventType"]


class EventType(IntEnum):
    """postwire.v1.EventType; `events.type` stores the value."""

    ACCEPTED = event_pb2.EVENT_TYPE_ACCEPTED
    DELIVERED = event_pb2.EVENT_TYPE_DELIVERED
    DEFERRED = event_pb2.EVENT_TYPE_DEFERRED
    BOUNCED = event_pb2.EVENT_TYPE_BOUNCED
    SUPPRESSED = event_pb2.EVENT_TYPE_SUPPRESSED
    FAILED = event_pb2.EVENT_TYPE_FAILED
    EXPIRED = event_pb2.EVENT_TYPE_EXPIRED
    SCHEDULED = event_pb2.EVENT_TYPE_SCHEDULED
    COMPLAINED = event_pb2.EVENT_TYPE_COMPLAINED
    WEBHOOK_DISABLED = event_pb2.EVENT_TYPE_WEBHOOK_DISABLED
    # Reserved: no service emits these yet (a filter may still name them).
    OPENED = event_pb2.EVENT_TYPE_OPENED
    CLICKED = event_pb2.EVENT_TYPE_CLICKED
    UNSUBSCRIBED = event_pb2.EVENT_TYPE_UNSUBSCRIBED

    @property
    def proto(self) -> event_pb2.EventType.ValueType:
        return event_pb2.EventType.ValueType(self.value)


# What a webhook may subscribe to: the types emitted today.
EMITTED_TYPES = frozenset(EventType) - {EventType.OPENED, EventType.CLICKED, EventType.UNSUBSCRIBED}


class DeliveryState(IntEnum):
    """postwire.v1.WebhookDeliveryState; `webhook_deliveries.state smallint` stores the value."""

    PENDING = webhook_service_pb2.WEBHOOK_DELIVERY_STATE_PENDING
    DELIVERED = webhook_service_pb2.WEBHOOK_DELIVERY_STATE_DELIVERED
    DEAD_LETTERED = webhook_service_pb2.WEBHOOK_DELIVERY_STATE_DEAD_LETTERED

    @property
    def proto(self) -> webhook_service_pb2.WebhookDeliveryState.ValueType:
        return webhook_service_pb2.WebhookDeliveryState.ValueType(self.value)

"""The events service's enums are the proto's values: every proto value (but _UNSPECIFIED) has a
member with the same number and name, so a value added to a .proto fails here until it is added."""

from __future__ import annotations

from postwire.v1 import event_pb2, webhook_service_pb2

from services.events.filters import KNOWN_TYPES
from services.events.kinds import EMITTED_TYPES, DeliveryState, EventType
from services.events.webhook_rules import KNOWN_TYPES as WEBHOOK_TYPES


def test_every_event_type_of_the_proto_has_a_member_of_the_same_number_and_name() -> None:
    proto = {
        name.removeprefix("EVENT_TYPE_"): number
        for name, number in event_pb2.EventType.items()
        if number != event_pb2.EVENT_TYPE_UNSPECIFIED
    }
    assert {m.name: m.value for m in EventType} == proto
    assert all(m.proto == m.value for m in EventType)


def test_every_delivery_state_of_the_proto_has_a_member_of_the_same_number_and_name() -> None:
    proto = {
        name.removeprefix("WEBHOOK_DELIVERY_STATE_"): number
        for name, number in webhook_service_pb2.WebhookDeliveryState.items()
        if number != webhook_service_pb2.WEBHOOK_DELIVERY_STATE_UNSPECIFIED
    }
    assert {m.name: m.value for m in DeliveryState} == proto


def test_filters_take_every_type_and_webhooks_only_those_emitted_today() -> None:
    assert KNOWN_TYPES == frozenset(EventType)
    assert WEBHOOK_TYPES == EMITTED_TYPES
    assert EventType.OPENED not in EMITTED_TYPES and EventType.DELIVERED in EMITTED_TYPES

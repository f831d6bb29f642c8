"""Recipient states as stored in PostgreSQL, and their public enum values."""

from __future__ import annotations

from postwire.v1 import message_pb2

__all__ = ["PENDING_STATES", "TERMINAL_STATES", "state_to_proto"]

_STATES = {
    "accepted": message_pb2.RECIPIENT_STATE_ACCEPTED,
    "scheduled": message_pb2.RECIPIENT_STATE_SCHEDULED,
    "queued": message_pb2.RECIPIENT_STATE_QUEUED,
    "deferred": message_pb2.RECIPIENT_STATE_DEFERRED,
    "delivered": message_pb2.RECIPIENT_STATE_DELIVERED,
    "bounced": message_pb2.RECIPIENT_STATE_BOUNCED,
    "suppressed": message_pb2.RECIPIENT_STATE_SUPPRESSED,
    "failed": message_pb2.RECIPIENT_STATE_FAILED,
    "expired": message_pb2.RECIPIENT_STATE_EXPIRED,
}
PENDING_STATES = frozenset({"accepted", "scheduled", "queued", "deferred"})
TERMINAL_STATES = frozenset(_STATES) - PENDING_STATES


def state_to_proto(state: str) -> message_pb2.RecipientState.ValueType:
    return _STATES.get(state, message_pb2.RECIPIENT_STATE_UNSPECIFIED)

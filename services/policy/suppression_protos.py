"""postwire.v1.Suppression <-> suppression entries, for the public and the internal servicer."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from postwire.v1 import suppression_service_pb2

from services.policy.manage_suppressions import EntryInput
from services.policy.suppressions import Entry

__all__ = ["entry_inputs", "to_proto"]


def entry_inputs(items: Sequence[suppression_service_pb2.Suppression]) -> list[EntryInput]:
    return [
        EntryInput(
            address=s.address,
            reason=s.reason,
            group=s.unsubscribe_group,
            source_message_id=s.source_message_id,
            expire_time=s.expire_time.ToDatetime(tzinfo=UTC) if s.HasField("expire_time") else None,
        )
        for s in items
    ]


def to_proto(e: Entry) -> suppression_service_pb2.Suppression:
    out = suppression_service_pb2.Suppression(
        address=e.address,
        reason=suppression_service_pb2.SuppressionReason.ValueType(e.reason),
        unsubscribe_group=e.group,
        source_message_id=str(e.source_message_id) if e.source_message_id else "",
    )
    if e.create_time is not None:
        out.create_time.FromDatetime(e.create_time)
    if e.expire_time is not None:
        out.expire_time.FromDatetime(e.expire_time)
    return out

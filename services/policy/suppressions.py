"""Suppression entries: validation and normalisation; pure."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

from postwire.v1 import suppression_service_pb2 as _pb

from libs.mail.stream_names import name_problem

__all__ = ["ALL_MAIL_ONLY", "MAX_BATCH", "Entry", "Reason", "check_entry", "normalise_address"]

MAX_BATCH = 10_000


class Reason(IntEnum):
    """postwire.v1.SuppressionReason; the values are the proto's, stored as they are."""

    HARD_BOUNCE = _pb.SUPPRESSION_REASON_HARD_BOUNCE
    COMPLAINT = _pb.SUPPRESSION_REASON_COMPLAINT
    UNSUBSCRIBE = _pb.SUPPRESSION_REASON_UNSUBSCRIBE
    MANUAL = _pb.SUPPRESSION_REASON_MANUAL


# Reasons whose suppression covers all mail, never one group.
ALL_MAIL_ONLY = frozenset({Reason.HARD_BOUNCE, Reason.COMPLAINT})
_REASONS = frozenset(r.value for r in Reason)
_REASON_NAMES = ", ".join(r.name for r in Reason)


@dataclass(frozen=True, slots=True)
class Entry:
    address: str
    reason: int
    group: str
    source_message_id: uuid.UUID | None
    expire_time: datetime | None
    create_time: datetime | None = None


def normalise_address(address: str) -> str:
    """Suppression matches case-insensitively: mailbox providers treat local parts that way, and
    a bounce for Ada@x.com must stop mail to ada@x.com."""
    return address.strip().lower()


def check_entry(
    field: str,
    address: str,
    reason: int,
    group: str,
    source_message_id: str,
    expire_time: datetime | None,
    now: datetime,
) -> tuple[Entry | None, list[tuple[str, str]]]:
    violations: list[tuple[str, str]] = []
    addr = normalise_address(address)
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or len(addr) > 254 or any(c.isspace() or ord(c) < 32 for c in addr):
        violations.append((f"{field}.address", "an email address is required"))
    if reason not in _REASONS:
        violations.append((f"{field}.reason", f"a reason is required: {_REASON_NAMES}"))
    group_problem = group and name_problem(group)
    if group_problem:
        violations.append((f"{field}.unsubscribe_group", group_problem))
    elif group and reason in ALL_MAIL_ONLY:
        violations.append(
            (f"{field}.unsubscribe_group", "bounces and complaints apply to all mail, not one group")
        )
    source: uuid.UUID | None = None
    if source_message_id:
        try:
            source = uuid.UUID(source_message_id)
        except ValueError:
            violations.append((f"{field}.source_message_id", "a message id is a UUID"))
    if expire_time is not None and expire_time <= now:
        violations.append((f"{field}.expire_time", "must be in the future"))
    if violations:
        return None, violations
    return Entry(addr, Reason(reason), group, source, expire_time), []

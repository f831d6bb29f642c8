"""What a message is to submission, as stored and as read back: plain values, no I/O.

The use cases build and read these; `store.py` maps them to rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from libs.mail.parts import Parts
from libs.mail.states import MessageState, RecipientState

__all__ = ["MessageRow", "NewMessage", "RecipientRow"]


@dataclass(frozen=True, slots=True)
class NewMessage:
    id: uuid.UUID
    tenant_id: str
    idempotency_key: str | None
    request_hash: bytes
    request: bytes
    stream: str
    tags: Sequence[str]
    metadata: Mapping[str, str]
    send_time: datetime | None
    route_due_time: datetime
    state: MessageState
    recipients: Sequence[tuple[str, int, RecipientState]]  # (address, kind, state) in request order
    template_versions: str | None = None  # JSON, see libs.render_request
    sandbox: bool = False
    rendered: Parts | None = None  # a template's rendering at acceptance, for the router


@dataclass(frozen=True, slots=True)
class RecipientRow:
    address: str
    kind: int
    state: RecipientState
    attempts: int
    last_code: int | None
    last_enhanced: str | None
    last_text: str | None
    next_attempt_time: datetime | None
    update_time: datetime
    failure_reason: str | None = None


@dataclass(frozen=True, slots=True)
class MessageRow:
    id: str
    request: bytes
    request_hash: bytes
    stream: str
    create_time: datetime
    send_time: datetime | None
    rfc822_message_id: str | None
    recipients: list[RecipientRow]
    template_versions: str | None = None
    sandbox: bool = False

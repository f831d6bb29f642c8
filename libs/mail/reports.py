"""What DSN and ARF parsing share: loading untrusted mail robustly and reading the returned
original's headers; pure (stdlib `email` only).

Reports come from anyone on the Internet, so nothing here may raise on odd bytes: the parser runs
in compat32 mode (header values stay plain strings, no strict header classes that raise on a
malformed address) and every header read goes through `header`, which never raises.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

__all__ = ["OriginalHeaders", "body_text", "header", "load", "original_headers", "report_parts"]


def load(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def header(msg: Message, name: str) -> str:
    """A header's value as one line of text ('' when absent or undecodable)."""
    try:
        value = msg.get(name)
    except Exception:
        return ""
    if value is None:
        return ""
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Raw 8-bit bytes (UTF-8 in an RFC 6533 report) arrive as surrogate escapes.
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return " ".join(text.split())


def report_parts(msg: Message, report_type: str) -> list[Message] | None:
    """The parts of a multipart/report of `report_type` ('delivery-status', 'feedback-report'),
    or None when the message is not one."""
    if msg.get_content_type() != "multipart/report":
        return None
    if (msg.get_param("report-type") or "").__str__().lower() != report_type:
        return None
    payload = msg.get_payload()
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else None


@dataclass(frozen=True, slots=True)
class OriginalHeaders:
    """The headers of the message a report returns (message/rfc822, text/rfc822-headers or
    message/rfc822-headers), as far as Postwire can match them."""

    return_path: str
    feedback_id: str  # X-Postwire-Feedback-Id: the recipient's return-path token
    message_id: str


def original_headers(parts: list[Message]) -> OriginalHeaders | None:
    for part in parts:
        kind = part.get_content_type()
        headers: Message | None = None
        if kind == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                headers = inner[0]
        elif kind in ("text/rfc822-headers", "message/rfc822-headers"):
            text = body_text(part)
            headers = HeaderParser(policy=email.policy.compat32).parsestr(text.lstrip("\r\n"))
        if headers is not None:
            return OriginalHeaders(
                return_path=header(headers, "Return-Path").strip("<>"),
                feedback_id=header(headers, "X-Postwire-Feedback-Id"),
                message_id=header(headers, "Message-ID"),
            )
    return None


def body_text(part: Message) -> str:
    """A non-multipart part's body as text, transfer decoding undone; '' for anything else."""
    if part.is_multipart():
        return ""
    try:
        data = part.get_payload(decode=True)
    except Exception:
        return ""
    if not isinstance(data, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")

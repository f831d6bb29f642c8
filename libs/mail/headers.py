"""Rules for caller-supplied header names and values; pure."""

from __future__ import annotations

import re

__all__ = ["RESERVED_HEADERS", "header_name_problem"]

# RFC 5322 field name: printable US-ASCII except colon.
_FTEXT = re.compile(r"^[!-9;-~]{1,76}$")

# Headers Postwire writes itself, or that only a receiving MTA may add. Letting a caller set them
# would let a request forge the envelope, signatures or routing.
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "sender",
        "reply-to",
        "return-path",
        "received",
        "dkim-signature",
        "authentication-results",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "content-id",
        "resent-from",
        "resent-to",
        "resent-cc",
        "resent-bcc",
        "resent-sender",
        "resent-date",
        "resent-message-id",
        "delivered-to",
        "x-original-to",
        "in-reply-to-postwire",
    }
)
_RESERVED_PREFIXES = ("arc-", "x-postwire-", "content-")


def header_name_problem(name: str) -> str | None:
    if not _FTEXT.fullmatch(name):
        return "header names must be 1-76 printable ASCII characters without spaces or ':'"
    lowered = name.lower()
    if lowered in RESERVED_HEADERS or lowered.startswith(_RESERVED_PREFIXES):
        return f"'{name}' is reserved: Postwire sets it itself"
    return None

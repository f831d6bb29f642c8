"""Sealed page tokens and page sizes for every List method (AIP-158); pure apart from the clock.

A token is the key ring's AEAD seal of {position, caller, hash of the request's filters, expiry}:
callers cannot read another tenant's volume from it, forge a position, page another tenant's data,
or change filters mid-listing (the protos forbid it). Every way a token can be wrong gets the same
answer, so the answer is no oracle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from google.protobuf.message import Message

from libs.errors import InvalidArgument
from libs.token_keys import KeyRing, TokenInvalid

T = TypeVar("T")
P = TypeVar("P")

__all__ = [
    "ADMIN_CALLER",
    "INVALID_PAGE_TOKEN",
    "MAX_PAGE_SIZE",
    "PAGE_TOKEN_TTL",
    "RECORDS_PAGE_SIZE",
    "RESOURCES_PAGE_SIZE",
    "Cursor",
    "PageTokens",
    "filters_digest",
    "page_size",
]

PURPOSE = "page_token"
_TOKEN_FIELD = "page_token"
PAGE_TOKEN_TTL = timedelta(hours=24)
INVALID_PAGE_TOKEN = "page_token is invalid or expired; repeat the request without it"
# AdminService is called with the admin token, not a tenant's key: its tokens belong to this caller.
ADMIN_CALLER = "admin"


# The page sizes every List method documents in its proto: resources people create by hand
# (tenants, keys, templates, domains) page by 50, records the system writes (events,
# suppressions, webhook deliveries) by 100; none returns more than 1000 at once.
RESOURCES_PAGE_SIZE = 50
RECORDS_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(requested: int, *, default: int) -> int:
    if requested < 0:
        raise InvalidArgument([("page_size", "must not be negative")])
    return min(requested or default, MAX_PAGE_SIZE)


def _invalid() -> InvalidArgument:
    return InvalidArgument([("page_token", INVALID_PAGE_TOKEN)])


def filters_digest(request: Message) -> str:
    """sha256 of the method's name and every request field except page_size and page_token, so a
    token only continues the listing it came from; computed from the message, so a filter added
    to a proto later is covered without touching this code."""
    filters = type(request)()
    filters.CopyFrom(request)
    filters.ClearField("page_size")
    filters.ClearField("page_token")
    digest = hashlib.sha256(request.DESCRIPTOR.full_name.encode() + b"\x00")
    digest.update(filters.SerializeToString(deterministic=True))
    return digest.hexdigest()


def _utc_now() -> datetime:
    return datetime.now(UTC)


class PageTokens:
    """Seals and opens page tokens with one key ring; `now` is injectable for expiry tests."""

    def __init__(
        self, ring: KeyRing, *, now: Callable[[], datetime] = _utc_now, ttl: timedelta = PAGE_TOKEN_TTL
    ) -> None:
        self._ring = ring
        self._now = now
        self._ttl = ttl

    def cursor(self, request: Message, /, *, caller: str) -> Cursor:
        """Where `request` resumes; INVALID_ARGUMENT on page_token for any token that is not one
        this deployment issued to `caller` for these filters within the last 24 h."""
        filters = filters_digest(request)
        token = str(getattr(request, _TOKEN_FIELD))  # every List request declares page_token (AIP-158)
        after = self._open(token, caller=caller, filters=filters) if token else ""
        return Cursor(after, seal=lambda position: self._seal(position, caller=caller, filters=filters))

    def _seal(self, position: str, *, caller: str, filters: str) -> str:
        expire = int((self._now() + self._ttl).timestamp())
        payload = json.dumps({"p": position, "c": caller, "f": filters, "e": expire}, separators=(",", ":"))
        return self._ring.seal(PURPOSE, payload.encode())

    def _open(self, token: str, *, caller: str, filters: str) -> str:
        try:
            fields = json.loads(self._ring.open(PURPOSE, token))
        except (TokenInvalid, ValueError):
            raise _invalid() from None
        if not isinstance(fields, dict):
            raise _invalid()
        position, expire = fields.get("p"), fields.get("e")
        if (
            not isinstance(position, str)
            or not position
            or fields.get("c") != caller
            or fields.get("f") != filters
            or not isinstance(expire, int)
            or self._now().timestamp() >= expire
        ):
            raise _invalid()
        return position


@dataclass(frozen=True, slots=True)
class Cursor:
    # Where the page starts after (a sequence number, a name...); '' for the first page.
    after: str
    seal: Callable[[str], str]

    def parse(self, parser: Callable[[str], P], /) -> P | None:
        """The position as the query needs it, None for the first page. Positions come only from
        sealed tokens, but one the query cannot take (an int64 overflow) must still answer
        INVALID_ARGUMENT rather than reach the database."""
        if not self.after:
            return None
        try:
            return parser(self.after)
        except (ValueError, OverflowError):
            raise _invalid() from None

    def page(self, rows: Sequence[T], size: int, position: Callable[[T], str]) -> tuple[Sequence[T], str]:
        """Split `size + 1` fetched rows into the page and the next page's token ('' at the end);
        `position` says where the next page starts after the page's last row."""
        if len(rows) > size:
            return rows[:size], self.seal(position(rows[size - 1]))
        return rows, ""

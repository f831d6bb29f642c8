"""Opaque page tokens for ListEvents; pure."""

from __future__ import annotations

import base64
import binascii

from libs.errors import InvalidArgument

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "decode_token", "encode_token", "page_size"]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument([("page_size", "must not be negative")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(last_seq: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{last_seq}".encode()).decode().rstrip("=")


def decode_token(token: str) -> int:
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        version, _, seq = raw.partition(":")
        if version != "v1" or not seq.isdigit():
            raise ValueError
        return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument([("page_token", "not a token returned by ListEvents")]) from None

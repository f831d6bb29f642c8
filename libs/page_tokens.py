"""Opaque page tokens and page sizes for List methods (AIP-158); pure."""

from __future__ import annotations

import base64
import binascii

from libs.errors import InvalidArgument

__all__ = ["decode_page_token", "encode_page_token", "page_size"]


def page_size(requested: int, *, default: int, maximum: int) -> int:
    if requested < 0:
        raise InvalidArgument([("page_size", "must not be negative")])
    return min(requested or default, maximum)


def encode_page_token(position: str) -> str:
    """`position` is where the next page starts after (a sequence number, a name)."""
    return base64.urlsafe_b64encode(f"v1:{position}".encode()).decode().rstrip("=")


def decode_page_token(token: str, *, method: str) -> str:
    """The position from a token, '' for the first page; INVALID_ARGUMENT for anything else."""
    if not token:
        return ""
    try:
        version, _, position = (
            base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().partition(":")
        )
    except (ValueError, binascii.Error, UnicodeDecodeError):
        version, position = "", ""
    if version != "v1" or not position:
        raise InvalidArgument([("page_token", f"not a token returned by {method}")])
    return position

"""Opaque page tokens and page sizes for List methods (AIP-158); pure."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import TypeVar

from libs.errors import InvalidArgument

T = TypeVar("T")

__all__ = ["decode_page_token", "encode_page_token", "page_of", "page_size"]


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


def page_of(rows: Sequence[T], size: int, position: Callable[[T], str]) -> tuple[Sequence[T], str]:
    """Split `size + 1` fetched rows into the page and the token for the next one ('' at the end);
    `position` says where the next page starts after the page's last row."""
    if len(rows) > size:
        return rows[:size], encode_page_token(position(rows[size - 1]))
    return rows, ""

"""ListEvents paging: the position is the last event's sequence number; pure."""

from __future__ import annotations

from libs.errors import InvalidArgument
from libs.page_tokens import decode_page_token, encode_page_token
from libs.page_tokens import page_size as _page_size

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "decode_token", "encode_token", "page_size"]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    return _page_size(requested, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)


def encode_token(last_seq: int) -> str:
    return encode_page_token(str(last_seq))


def decode_token(token: str) -> int:
    position = decode_page_token(token, method="ListEvents")
    if not position:
        return 0
    if not position.isdigit():
        raise InvalidArgument([("page_token", "not a token returned by ListEvents")])
    return int(position)

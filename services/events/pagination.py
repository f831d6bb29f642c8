"""ListEvents paging: the position is the last event's sequence number; pure."""

from __future__ import annotations

from libs.page_tokens import RECORDS_PAGE_SIZE
from libs.page_tokens import page_size as _page_size

__all__ = ["page_size", "sequence"]

_BIGINT_MAX = 2**63 - 1


def page_size(requested: int) -> int:
    return _page_size(requested, default=RECORDS_PAGE_SIZE)


def sequence(position: str) -> int:
    """A position as the `bigint` the query compares with; ValueError for anything else."""
    if not (position.isascii() and position.isdigit()) or int(position) > _BIGINT_MAX:
        raise ValueError(position)
    return int(position)

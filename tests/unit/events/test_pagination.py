"""ListEvents page tokens and page sizes."""

from __future__ import annotations

import pytest

from libs.errors import InvalidArgument
from libs.page_tokens import MAX_PAGE_SIZE, RECORDS_PAGE_SIZE
from services.events.pagination import (
    page_size,
    sequence,
)


@pytest.mark.parametrize("seq", [0, 1, 42, 1_000_000, 2**63 - 1])
def test_sequence_positions_within_bigint_parse(seq: int) -> None:
    assert sequence(str(seq)) == seq


@pytest.mark.parametrize("position", ["", "abc", "-5", "1.0", "²", str(2**63), "9" * 40])
def test_positions_the_query_cannot_take_are_value_errors(position: str) -> None:
    # Cursor.parse turns this into the one page_token INVALID_ARGUMENT, never a database INTERNAL.
    with pytest.raises(ValueError):
        sequence(position)


def test_page_size_default() -> None:
    assert RECORDS_PAGE_SIZE == 100
    assert page_size(0) == 100


@pytest.mark.parametrize(
    ("requested", "expected"), [(1, 1), (250, 250), (1000, 1000), (1001, 1000), (5000, 1000)]
)
def test_page_size_is_capped(requested: int, expected: int) -> None:
    assert MAX_PAGE_SIZE == 1000
    assert page_size(requested) == expected


@pytest.mark.parametrize("requested", [-1, -1000])
def test_negative_page_size_is_rejected(requested: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        page_size(requested)
    assert [field for field, _ in info.value.violations] == ["page_size"]

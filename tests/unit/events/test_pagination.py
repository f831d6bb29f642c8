"""ListEvents page tokens and page sizes."""

from __future__ import annotations

import base64

import pytest

from libs.errors import InvalidArgument
from services.events.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    decode_token,
    encode_token,
    page_size,
)


@pytest.mark.parametrize("seq", [0, 1, 42, 1_000_000, 2**63 - 1])
def test_token_round_trip(seq: int) -> None:
    token = encode_token(seq)
    assert decode_token(token) == seq
    assert "=" not in token
    assert token.isascii() and token.isprintable()
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_empty_token_is_the_first_page() -> None:
    assert decode_token("") == 0


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "%%%",
        "ÿ",
        "=",
        "dj",
        _b64("v2:10"),
        _b64("v1:"),
        _b64("v1:abc"),
        _b64("v1:-5"),
        _b64("10"),
        base64.urlsafe_b64encode(b"\xff\xfe:1").decode(),
    ],
)
def test_garbage_token_is_invalid_argument_on_page_token(token: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        decode_token(token)
    assert info.value.violations == [("page_token", "not a token returned by ListEvents")]


def test_page_size_default() -> None:
    assert DEFAULT_PAGE_SIZE == 100
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

"""The one rule for stream and unsubscribe-group names."""

from __future__ import annotations

import pytest

from libs.mail.stream_names import name_problem


@pytest.mark.parametrize("name", ["transactional", "product-news", "news_2026", "9lives", "a", "x" * 64])
def test_valid_names(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    "name", ["", "_news", "-news", "News", "news letter", "news.", "x" * 65, "news\n", "*", "nëws"]
)
def test_invalid_names_say_the_rule(name: str) -> None:
    assert name_problem(name) == (
        "1-64 characters: lowercase letters, digits, '-' and '_', starting with a letter or digit"
    )

from __future__ import annotations

import pytest

from libs.locales import closest_locale, locale_problem


@pytest.mark.parametrize(
    ("available", "wanted", "expected"),
    [
        ({"fr", "fr-CA"}, "fr-CA", "fr-CA"),
        ({"fr"}, "fr-CA", "fr"),
        ({"fr"}, "FR-ca", "fr"),
        ({"fr-CA"}, "fr", ""),
        ({"fr"}, "de", ""),
        ({"fr"}, "", ""),
        ({"zh-Hant"}, "zh-Hant-TW", "zh-Hant"),
    ],
)
def test_closest_locale_falls_back_by_prefix(available: set[str], wanted: str, expected: str) -> None:
    assert closest_locale(available, wanted) == expected


@pytest.mark.parametrize("tag", ["fr", "fr-CA", "zh-Hant-TW", "es-419"])
def test_valid_tags(tag: str) -> None:
    assert locale_problem(tag) is None


@pytest.mark.parametrize("tag", ["", "f", "fr_CA", "fr-", "x y", "fr-CA\n", "../en"])
def test_invalid_tags(tag: str) -> None:
    assert locale_problem(tag)

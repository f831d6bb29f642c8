"""Locale tags and fallback; pure."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["closest_locale", "locale_problem"]

_TAG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}")


def locale_problem(tag: str) -> str | None:
    if not _TAG.fullmatch(tag):
        return "must be a BCP 47 language tag such as 'fr' or 'fr-CA'"
    return None


def closest_locale(available: Iterable[str], wanted: str) -> str:
    """The best variant for `wanted`: exact, then shorter prefixes ("fr-CA" → "fr"); "" = default.

    Tags compare case-insensitively, as BCP 47 says they do.
    """
    by_lower = {tag.lower(): tag for tag in available}
    parts = wanted.lower().split("-") if wanted else []
    while parts:
        hit = by_lower.get("-".join(parts))
        if hit is not None:
            return hit
        parts.pop()
    return ""

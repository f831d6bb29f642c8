"""Suppression entry checks; pure."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.policy.suppressions import check_entry, normalise_address

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def test_a_good_entry_is_normalised() -> None:
    entry, problems = check_entry("s[0]", " Ada@Example.COM ", 4, "", "", None, NOW)
    assert problems == [] and entry is not None
    assert entry.address == "ada@example.com" and entry.group == "" and entry.source_message_id is None


def test_every_problem_is_named() -> None:
    entry, problems = check_entry("s[3]", "nope", 0, "Bad Group", "xyz", NOW - timedelta(seconds=1), NOW)
    assert entry is None
    assert [f for f, _ in problems] == [
        "s[3].address",
        "s[3].reason",
        "s[3].unsubscribe_group",
        "s[3].source_message_id",
        "s[3].expire_time",
    ]


def test_bounces_and_complaints_cannot_be_group_scoped() -> None:
    for reason in (1, 2):
        _, problems = check_entry("s", "a@b.c", reason, "news", "", None, NOW)
        assert problems == [
            ("s.unsubscribe_group", "bounces and complaints apply to all mail, not one group")
        ]
    entry, problems = check_entry(
        "s", "a@b.c", 3, "news", str(uuid.UUID(int=1)), NOW + timedelta(days=1), NOW
    )
    assert problems == [] and entry is not None and entry.group == "news"


def test_addresses_with_controls_are_refused() -> None:
    for bad in ("a@b\x00c", "a b@c.d", "@b.c", "a@", "x" * 250 + "@b.cd"):
        assert check_entry("s", bad, 4, "", "", None, NOW)[1], bad
    assert normalise_address("A@B.C") == "a@b.c"

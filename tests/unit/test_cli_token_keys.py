"""`postwire up` makes the local POSTWIRE_TOKEN_KEYS once, private to its owner, and reuses it."""

from __future__ import annotations

import stat
from pathlib import Path

from libs.token_keys import KeyRing
from services.cli import _dev_token_keys


def test_the_local_ring_is_made_once_with_mode_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "token-keys"
    first = _dev_token_keys(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(KeyRing.parse(first).keys) == 1
    assert _dev_token_keys(path) == first
    assert _dev_token_keys(tmp_path / "elsewhere") != first

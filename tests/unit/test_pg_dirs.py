"""Whether the PostgreSQL server user can reach a directory, read from mode bits."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from libs.embedded.pg_dirs import reachable

STRANGER = 0x7FFF_FFF0  # a uid and gid that own nothing here


@pytest.fixture
def tree() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="postwire-reach-"))
    root.chmod(0o711)
    (root / "a" / "b").mkdir(parents=True)
    (root / "a").chmod(0o700)
    yield root
    shutil.rmtree(root)


def test_one_closed_ancestor_hides_everything_below_it(tree: Path) -> None:
    assert reachable(tree, STRANGER, {STRANGER})
    assert not reachable(tree / "a" / "b", STRANGER, {STRANGER})


def test_search_for_others_or_for_the_group_opens_it(tree: Path) -> None:
    (tree / "a").chmod(0o701)
    assert reachable(tree / "a" / "b", STRANGER, {STRANGER})
    (tree / "a").chmod(0o710)
    assert not reachable(tree / "a" / "b", STRANGER, {STRANGER})
    assert reachable(tree / "a" / "b", STRANGER, {(tree / "a").stat().st_gid})


def test_the_owner_is_judged_by_the_owner_bits_alone(tree: Path) -> None:
    owner = (tree / "a").stat().st_uid
    assert reachable(tree / "a" / "b", owner, {STRANGER})
    (tree / "a").chmod(0o071)
    assert not reachable(tree / "a" / "b", owner, {(tree / "a").stat().st_gid})

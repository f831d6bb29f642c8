"""`postwire migrate` with no migration files stops with a message, never "applied 0" and exit 0.

An install that lost its package data would otherwise report success on an empty database and
let the new pods start against no schema.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import libs.db
from services import cli


def test_migrate_without_migration_files_exits_non_zero_naming_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "migrations"
    empty.mkdir()
    monkeypatch.setattr(libs.db, "MIGRATIONS", empty)
    # Nothing listens here: the check must come before any connection is tried.
    monkeypatch.setenv("POSTWIRE_DATABASE_URL", "postgresql://postwire@127.0.0.1:9/none")
    monkeypatch.setattr(sys, "argv", ["postwire", "migrate"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    message = str(exited.value.code)
    assert message.startswith("postwire migrate: no migrations found in ")
    assert str(empty) in message
    assert "applied" not in capsys.readouterr().out

"""Two `postwire migrate` runs at once (two pods' initContainers) on an empty database: both
succeed, and every migration is applied exactly once (the advisory lock in libs/db.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from libs.embedded.postgres import start_postgres

REPO = Path(__file__).resolve().parents[2]
MIGRATIONS = sorted(p.name for p in (REPO / "libs" / "migrations").glob("*.sql"))
POSTWIRE = str(Path(sys.executable).parent / "postwire")


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_postgres(tmp_path_factory.mktemp("migrate") / "postgres")
    try:
        yield url
    finally:
        proc.stop(timeout=30)


def _applied(stdout: str) -> list[str]:
    """The names a run reports: "applied N migration(s): a.sql, b.sql" or "...: none pending"."""
    listed = stdout.strip().split(": ", 1)[1]
    return [] if listed == "none pending" else listed.split(", ")


def test_two_concurrent_runs_on_an_empty_database_apply_each_migration_once(
    database_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTWIRE_")}
    env["POSTWIRE_DATABASE_URL"] = database_url
    runs = [
        subprocess.Popen(
            [POSTWIRE, "migrate"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    applied = [name for stdout, _ in outputs for name in _applied(stdout)]
    # Between them, every file once; the run that waited on the lock finds nothing pending.
    assert sorted(applied) == MIGRATIONS
    assert sorted(len(_applied(stdout)) for stdout, _ in outputs) == [0, len(MIGRATIONS)]

    async def recorded() -> list[str]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        finally:
            await conn.close()
        return [r["version"] for r in rows]

    assert asyncio.run(recorded()) == MIGRATIONS

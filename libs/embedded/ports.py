"""Free TCP ports for the servers that tests, the bench and `postwire up` start on loopback.

Binding port 0 and handing the kernel's number on to a server started later is racy twice over:
the number comes from the ephemeral range, which the kernel also gives to outgoing connections
(the tests' own gRPC, PostgreSQL and SMTP clients) between the pick and the server's bind; and two
test workers picking at the same moment can be given the same number once the probe socket is
closed. Either way a service died with "Address already in use" and took a whole suite with it.
Ports here come from below the ephemeral range, and each pick is reserved across processes for a
while by a file only one process can create; once the server has bound it, the probe sees it.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["free_port", "free_port_on"]

# A server binds its port within seconds of the pick; a reservation older than this is stale.
_RESERVED_SECONDS = 600.0
_LOWEST = 10_000  # clear of the well-known and most registered service ports
_ATTEMPTS = 200
_RESERVATIONS = Path(tempfile.gettempdir()) / "postwire-ports"


def free_port(host: str = "127.0.0.1") -> int:
    return free_port_on([host])


def free_port_on(hosts: Iterable[str]) -> int:
    """A TCP port free on every one of `hosts` at once (e.g. 127.0.0.2 and 127.0.0.3), reserved
    for this caller against every other process that picks through here."""
    addresses = list(hosts)
    if not addresses:
        raise ValueError("free_port_on needs at least one address")
    low, high = _range()
    for _ in range(_ATTEMPTS):
        port = random.randint(low, high) if high > low else _kernel_pick(addresses[0])
        if _bindable(port, addresses) and _reserve(port):
            return port
    raise OSError(f"no port free on all of {addresses} after {_ATTEMPTS} tries")


def _range() -> tuple[int, int]:
    """The ports below the kernel's ephemeral range (Linux: 32768-60999 by default)."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    return _LOWEST, ephemeral_low - 1


def _kernel_pick(host: str) -> int:
    # Only when the ephemeral range leaves nothing below it: the old, racier way.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _bindable(port: int, addresses: list[str]) -> bool:
    with contextlib.ExitStack() as held:
        try:
            for address in addresses:
                probe = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                probe.bind((address, port))
        except OSError:
            return False
    return True


def _reserve(port: int) -> bool:
    path = _RESERVATIONS / str(port)
    for _ in range(2):
        try:
            _RESERVATIONS.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return True
        except FileExistsError:
            try:
                if time.time() - path.stat().st_mtime < _RESERVED_SECONDS:
                    return False
                path.unlink()  # stale: whoever reserved it has long bound it or gone
            except FileNotFoundError:
                pass  # released by another process meanwhile: try to take it
            except OSError:
                return False  # another user's stale reservation: pick another port
        except OSError:
            # A reservation directory this user cannot write (another user's): the port is still
            # outside the ephemeral range, only not guarded against a parallel pick.
            return True
    return False

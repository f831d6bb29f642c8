"""Whether the platform is shedding load now, and the mark that carries it to the services.

The edge refuses calls past its limit (libs.grpcx.threaded_server). For `HOLD_SECONDS` after its
last refusal it marks the calls it forwards (metadata `postwire-shedding`), and a service that
serves a marked call notes it too (libs.grpcx.server). A service with
POSTWIRE_REALTIME_WHEN=shedding listens and holds a real-time CPU priority meanwhile
(libs.priority.RealtimeBoost), so the price of that class is paid only while callers are being
refused. Services do not pass the mark on: raising policy as well, through submission, was
measured and did worse (bench/README.md "A/B: the edge's CPU priority").

Only the edge starts a mark: it drops a caller's own copy, and the services behind it take
internal calls only with the internal token. A mark is a hint about CPU priority, never about
what a call may do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["HOLD_SECONDS", "KEY", "MARK", "active", "heeded", "marked", "note", "on_shedding"]

KEY = "postwire-shedding"
MARK = (KEY, "1")
HOLD_SECONDS = 1.0

# When this process last refused a call or served a marked one (monotonic seconds). A plain float
# written from several threads: a lost update at worst ends the window a moment early or late.
_last = float("-inf")
_clock: Callable[[], float] = time.monotonic  # a test steps its own
_listeners: list[Callable[[], None]] = []


def note() -> None:
    """A refusal here, or a marked call: shedding for another HOLD_SECONDS."""
    global _last
    _last = _clock()
    for listener in _listeners:
        listener()


def active() -> bool:
    return _clock() - _last < HOLD_SECONDS


def heeded() -> bool:
    """Whether anything in this process listens (a service with POSTWIRE_REALTIME_WHEN=shedding):
    elsewhere a call's metadata need not be searched for the mark."""
    return bool(_listeners)


def marked(metadata: Iterable[tuple[str, Any]] | None) -> bool:
    """Whether a call's metadata carries the mark."""
    return any(key == KEY for key, _ in metadata or ())


def on_shedding(listener: Callable[[], None]) -> None:
    """Call `listener` on every `note()` (from whichever thread noted it); it must be cheap."""
    _listeners.append(listener)

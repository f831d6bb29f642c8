"""A wall-clock bound on one render that stops it inside the template's code.

The output cap stops loops that write; loops that only spin (nested `range`s, or a loop over a
large variable inside another) write nothing and need a clock. Renders run on a render worker's
main thread, so a SIGALRM timer interrupts the generated Jinja code between bytecodes and raises
inside it, and the caller learns the template's line. It cannot interrupt native code (CSS
inlining) and is no guarantee: the pool's kill of the worker is (render_pool.py). Off the main
thread there is no such timer, and the render is unbounded in time."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["RenderTimedOut", "time_limit"]


class RenderTimedOut(Exception):
    pass


_armed = False


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    # A timer that fires just as the render ends finds the flag down and does nothing.
    if _armed:
        raise RenderTimedOut


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    global _armed
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    _armed = True
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        _armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

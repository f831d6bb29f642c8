"""Stopping a test suite's services together rather than one after another."""

from __future__ import annotations

import signal

from libs.embedded.suite import Suite

__all__ = ["stop_suite"]


def stop_suite(suite: Suite) -> None:
    """SIGTERM every service at once, then `Suite.stop` (which waits for each, kills what will not
    exit, and stops the infrastructure after them).

    Each service drains for up to its shutdown grace; one after another that is ~17 s at the end of
    every test session (and of every xdist worker), together about the slowest one's."""
    for proc in suite.processes.values():
        if proc.proc is not None and proc.proc.poll() is None:
            proc.proc.send_signal(signal.SIGTERM)
    suite.stop()

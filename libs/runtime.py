"""Process plumbing shared by the service entry points: JSON logs, signals, ordered shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time

__all__ = ["configure_logging", "wait_for_stop_signal"]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(service: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Lifecycle lines (starting, serving on, stopping) are always written: launchers and
    # operators read readiness from them whatever POSTWIRE_LOG_LEVEL says.
    lifecycle = logging.getLogger("postwire")
    lifecycle.setLevel(logging.INFO)
    lifecycle.info("starting %s", service)


async def wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

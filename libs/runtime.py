"""Process plumbing shared by the service entry points: JSON logs, signals, ordered shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

__all__ = ["CoalescingHandler", "configure_logging", "log_fields", "wait_for_stop_signal"]

# Keys a line's own fields may not replace.
_RESERVED = frozenset({"time", "level", "logger", "message", "service", "trace_id", "span_id", "exception"})


def log_fields(**fields: str | int | float | bool | None) -> dict[str, Any]:
    """`extra=` for a log call whose fields become top-level JSON keys (for log queries)."""
    return {"postwire_fields": fields}


class _JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # Formatted in the task that logged, so the current span is the caller's: the ids join
        # this line to its trace (the same W3C ids the OTLP exporter sends).
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = f"{span.trace_id:032x}"
            entry["span_id"] = f"{span.span_id:016x}"
        fields: Mapping[str, Any] = getattr(record, "postwire_fields", {})
        entry.update({k: v for k, v in fields.items() if k not in _RESERVED})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class CoalescingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Lines logged in one turn of the event loop go out in one write.

    A write to stderr is a system call (and, into a pipe, a wake-up of its reader): with one line
    per delivery attempt that was ~6 % of mta_worker's CPU. A line waits at most until the loop's
    next turn; WARNING and above, lines logged outside a running loop (startup, other threads)
    and a full buffer are written at once, and logging.shutdown() flushes at exit.
    """

    def __init__(self, stream: Any = None, *, max_lines: int = 256) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._scheduled = False
        self._max_lines = max_lines

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._pending.append(line)
        if record.levelno >= logging.WARNING or len(self._pending) >= self._max_lines:
            self.flush()
            return
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        try:
            loop.call_soon(self.flush)
        except RuntimeError:  # the loop is closing: nothing would run the flush
            self.flush()
            return
        self._scheduled = True

    def flush(self) -> None:
        self.acquire()
        try:
            lines, self._pending = self._pending, []
            self._scheduled = False
            if lines and self.stream is not None:
                try:
                    self.stream.write("\n".join(lines) + "\n")
                    self.stream.flush()
                except Exception:
                    pass  # stderr gone (a closed pipe): nothing left to tell
        finally:
            self.release()


def configure_logging(service: str, level: str) -> None:
    handler = CoalescingHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter(service))
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

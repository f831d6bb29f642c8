"""A child process whose readiness is read from its output, never guessed with sleeps."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ManagedProcess", "ProcessFailed"]


class ProcessFailed(RuntimeError):
    pass


class ManagedProcess:
    """Starts a command, tees its combined output to a log file, and waits for a ready line."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path,
        user: str | int | None = None,
        group: int | None = None,
        extra_groups: list[int] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else dict(os.environ)
        self.log_path = log_path
        self.user = user
        self.group = group
        self.extra_groups = extra_groups
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._lines: deque[str] = deque(maxlen=2000)
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None

    def start(self, *, ready: str, timeout: float = 30.0) -> re.Match[str]:
        """Start and block until a line matches `ready`; returns the match (e.g. a port)."""
        self.spawn()
        return self.wait_ready(ready, timeout=timeout)

    def spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            user=self.user,
            group=self.group,
            extra_groups=self.extra_groups,
            cwd=self.cwd,
            start_new_session=True,  # Ctrl-C in a terminal reaches the launcher only; it stops us in order
        )
        self._reader = threading.Thread(target=self._pump, name=f"log:{self.name}", daemon=True)
        self._reader.start()

    def wait_ready(self, ready: str, *, timeout: float = 30.0) -> re.Match[str]:
        assert self.proc is not None
        pattern = re.compile(ready)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                lines = list(self._lines)
                for line in lines[seen:] if len(lines) >= seen else lines:
                    match = pattern.search(line)
                    if match:
                        return match
                seen = len(lines)
                if self.proc.poll() is not None:
                    raise ProcessFailed(
                        f"{self.name} exited with {self.proc.returncode}:\n" + "\n".join(lines[-30:])
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ProcessFailed(f"{self.name} not ready after {timeout}s:\n" + "\n".join(lines[-30:]))
                self._cond.wait(min(remaining, 0.5))

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self.log_path.open("ab") as log:
            for raw in self.proc.stdout:
                log.write(raw)
                log.flush()
                with self._cond:
                    self._lines.append(raw.decode(errors="replace").rstrip())
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def output(self) -> str:
        with self._cond:
            return "\n".join(self._lines)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, *, timeout: float = 20.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal and wait; kill if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

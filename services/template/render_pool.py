"""Renders in a pool of worker processes, so a tenant's template cannot stall the event loop.

Each worker (render_worker.py) caps its address space and bounds each render with its own
clock, which answers with the template's line; the pool's clock is the guarantee: a worker that
has not answered by the limit plus a margin is killed. A worker that dies (killed, out of memory,
crashed) is replaced before its slot is handed out again. One tenant holds at most half the
workers (fair_queue.py); its further renders wait for its own slots, not other tenants'.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import struct
import sys
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

from libs import metrics
from libs.errors import InvalidArgument, Unavailable
from libs.mail.parts import Parts
from services.template.fair_queue import FairQueue, tenant_share

__all__ = ["RenderFailed", "RenderPool"]

_log = logging.getLogger("postwire.template.render_pool")

_HEADER = struct.Struct(">I")
# The worker's own clock fires at the limit and answers with the line; the kill comes after it,
# so it only catches what that clock cannot interrupt (native code, a stuck process).
KILL_MARGIN_SECONDS = 1.0
START_TIMEOUT_SECONDS = 60.0
RESTART_BACKOFF_SECONDS = 1.0
# The worker is started from the directory `services` is imported from, like the service itself.
_ROOT = Path(__file__).resolve().parents[2]


def worker_environment(env: Mapping[str, str]) -> dict[str, str]:
    """What a worker inherits: nothing of Postwire's configuration. Workers run tenant-written
    Jinja; were the sandbox ever escaped, there would be no database URL, internal token or key
    ring to read (the parent keeps them)."""
    return {k: v for k, v in env.items() if not k.startswith(("POSTWIRE_", "OTEL_"))}


class RenderFailed(RuntimeError):
    """Our own post-processing failed in a worker; not a domain error, so the caller sees INTERNAL."""


class _WorkerGone(Exception):
    pass


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, memory_mb: int, time_limit_seconds: float) -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.template.render_worker",
            str(memory_mb),
            repr(time_limit_seconds),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=_ROOT,
            env=worker_environment(os.environ),
        )
        worker = cls(proc)
        try:
            ready = await asyncio.wait_for(worker._read(), START_TIMEOUT_SECONDS)
            if ready != {"ready": True}:
                raise _WorkerGone("unexpected first frame")
        except BaseException:
            worker.kill()
            await proc.wait()
            raise
        return worker

    @property
    def alive(self) -> bool:
        """Also true of a process that exited a moment ago and that the event loop's child
        watcher has not reaped yet: WNOWAIT looks without reaping."""
        if self.proc.returncode is not None:
            return False
        try:
            exited = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False
        return exited is None

    async def _read(self) -> Any:
        assert self.proc.stdout is not None
        try:
            (size,) = _HEADER.unpack(await self.proc.stdout.readexactly(_HEADER.size))
            return json.loads(await self.proc.stdout.readexactly(size))
        except asyncio.IncompleteReadError:
            raise _WorkerGone("exited") from None

    async def call(self, request: Mapping[str, Any]) -> Any:
        assert self.proc.stdin is not None
        body = json.dumps(request).encode()
        try:
            self.proc.stdin.write(_HEADER.pack(len(body)) + body)
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise _WorkerGone("exited") from None
        return await self._read()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    async def stop(self, grace: float) -> None:
        """EOF asks the worker to exit after its current render; kill it if it does not."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            self.kill()
            await self.proc.wait()


class RenderPool:
    def __init__(
        self, *, workers: int, memory_mb: int, time_limit_seconds: float, max_waiting: int = 64
    ) -> None:
        self._size = workers
        # Renders waiting for a worker; past it a render is refused (UNAVAILABLE, retry) rather
        # than queued behind a line that would outlast the caller's deadline anyway. 64 is the
        # template service's default POSTWIRE_MAX_IN_FLIGHT, so only a raised limit reaches it.
        self._max_waiting = max_waiting
        self._memory_mb = memory_mb
        self._limit = time_limit_seconds
        self._queue: FairQueue[asyncio.Future[_Worker]] = FairQueue(tenant_share(workers))
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._all: set[_Worker] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # Both series from the start, so an alert's increase() sees 0 rather than nothing.
        for reason in ("time_limit", "exited"):
            metrics.render_kills.add(0, {"postwire.render.kill.reason": reason})

    async def start(self) -> None:
        started = await asyncio.gather(
            *(_Worker.start(self._memory_mb, self._limit) for _ in range(self._size))
        )
        for worker in started:
            self._add(worker)

    async def render(
        self,
        tenant: str,
        key: Any,
        parts: Parts,
        variables: Mapping[str, Any],
        *,
        mjml: bool,
        deps: Mapping[str, Parts],
        name: str,
    ) -> Parts:
        """Render in a worker; the same answers as Renderer.render, plus INVALID_ARGUMENT for a
        render that was killed or killed its worker, and RenderFailed for our own failures."""
        request = {
            "key": key,
            "name": name,
            "parts": [parts.subject, parts.html_body, parts.text_body],
            "deps": {n: [p.subject, p.html_body, p.text_body] for n, p in deps.items()},
            "variables": variables,
            "mjml": mjml,
        }
        # A worker that dies under a render is tried once more on a fresh one before the
        # template is blamed: it may have been dying already (killed from outside a moment before
        # it was handed out, which `alive` cannot see until the signal lands). A template that
        # really crashes the renderer crashes the second one too.
        for attempt in (1, 2):
            worker = await self._acquire(tenant)
            keep = False
            try:
                answer = await asyncio.wait_for(worker.call(request), self._limit + KILL_MARGIN_SECONDS)
                keep = not answer.get("recycle")
                break
            except TimeoutError:
                metrics.render_kills.add(1, {"postwire.render.kill.reason": "time_limit"})
                raise InvalidArgument(
                    [("template", f"'{name}': rendering took longer than {self._limit:g} s and was stopped")]
                ) from None
            except _WorkerGone:
                metrics.render_kills.add(1, {"postwire.render.kill.reason": "exited"})
                if attempt == 1:
                    _log.warning("a render worker exited under a render; trying a fresh one")
                    # Whatever killed it may have hit its idle siblings too: let those signals
                    # land, so the next worker handed out is one that is really alive.
                    await asyncio.sleep(0.05)
                    continue
                raise InvalidArgument(
                    [
                        (
                            "template",
                            f"'{name}': rendering stopped: it ran out of memory or crashed the renderer",
                        )
                    ]
                ) from None
            finally:
                # Killed unless it answered a whole frame: a cancelled call may have left half a
                # request in its pipe, and a worker past its time is stuck.
                self._release(tenant, worker, keep=keep)
        if "parts" in answer:
            return Parts(*answer["parts"])
        if "invalid" in answer:
            raise InvalidArgument([(f, d) for f, d in answer["invalid"]])
        raise RenderFailed(f"render worker failed: {answer.get('internal', 'no answer')}")

    async def close(self) -> None:
        """Stop every worker (no orphans); idempotent. Renders still waiting fail."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        workers = list(self._all)
        self._all.clear()
        self._idle.clear()
        await asyncio.gather(*(w.stop(self._limit + KILL_MARGIN_SECONDS) for w in workers))

    def _add(self, worker: _Worker) -> None:
        self._all.add(worker)
        self._idle.append(worker)
        self._spawn(self._watch(worker))
        self._dispatch()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, worker: _Worker) -> None:
        """A worker that dies while idle (killed from outside, say) is replaced; a busy one is
        replaced by the render that finds it gone."""
        await worker.proc.wait()
        if worker in self._all and worker not in self._busy:
            if worker in self._idle:
                self._idle.remove(worker)
            self._all.discard(worker)
            self._spawn(self._replace())

    async def _replace(self) -> None:
        while not self._closed:
            try:
                worker = await _Worker.start(self._memory_mb, self._limit)
            except Exception:
                _log.exception("could not start a render worker; retrying")
                await asyncio.sleep(RESTART_BACKOFF_SECONDS)
                continue
            # Read again: close() may have run while the worker started.
            if self._closing():
                await worker.stop(0)
                return
            self._add(worker)
            return

    def _closing(self) -> bool:
        # A call, not the attribute: mypy would keep the loop condition's narrowing across the
        # await above and call the check unreachable.
        return self._closed

    def _dispatch(self) -> None:
        # A worker killed while idle is dropped here, before a render is lost to it; its watcher
        # starts the replacement.
        self._idle = [w for w in self._idle if w.alive]
        while self._idle:
            granted = self._queue.next()
            if granted is None:
                return
            _, waiter = granted
            worker = self._idle.pop()
            self._busy.add(worker)
            waiter.set_result(worker)

    async def _acquire(self, tenant: str) -> _Worker:
        if self._closed:
            raise RuntimeError("render pool is closed")
        if len(self._queue) >= self._max_waiting:
            raise Unavailable("template renderer busy: too many renders waiting", retry_after=0.5)
        waiter: asyncio.Future[_Worker] = asyncio.get_running_loop().create_future()
        self._queue.wait(tenant, waiter)
        self._dispatch()
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(tenant, waiter.result(), keep=True)
            else:
                self._queue.cancel(waiter)
            raise

    def _release(self, tenant: str, worker: _Worker, *, keep: bool) -> None:
        self._queue.finish(tenant)
        self._busy.discard(worker)
        if keep and worker.alive and not self._closed:
            self._idle.append(worker)
            self._dispatch()
            return
        self._all.discard(worker)
        worker.kill()
        if not self._closed:
            self._spawn(self._replace())

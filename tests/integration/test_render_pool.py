"""The render pool with real worker processes, without the rest of the suite: the hard kill,
replacement, the per-tenant share and a clean close."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.errors import InvalidArgument, Unavailable
from libs.mail.parts import Parts
from libs.testing.polling import poll_until
from services.template.render_pool import RenderPool

SPIN = Parts("s", "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", "")
SMALL = Parts("Hi {{ name }}", "", "Hello {{ name }}")


@pytest.fixture
async def pool() -> AsyncIterator[RenderPool]:
    pool = RenderPool(workers=2, memory_mb=512, time_limit_seconds=1.0)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def _render(pool: RenderPool, tenant: str, parts: Parts, name: str = "small") -> Parts:
    return await pool.render(tenant, [name, 1], parts, {"name": "Ada"}, mjml=False, deps={}, name=name)


async def _until_busy(pool: RenderPool) -> None:
    async def busy() -> bool:
        return bool(pool._busy)

    await poll_until(busy, timeout=30, what="a render to reach a worker", interval=0.01)


def _pids(pool: RenderPool) -> set[int]:
    return {w.proc.pid for w in pool._all}


async def test_a_worker_that_cannot_answer_is_killed_at_the_limit_and_replaced(pool: RenderPool) -> None:
    before = _pids(pool)
    spinning = asyncio.create_task(_render(pool, "a", SPIN, "stuck"))
    await _until_busy(pool)
    (busy,) = pool._busy
    # A stopped process cannot run its own clock: only the pool's kill ends this render.
    os.kill(busy.proc.pid, signal.SIGSTOP)
    with pytest.raises(InvalidArgument) as caught:
        await spinning
    assert caught.value.violations == [
        ("template", "'stuck': rendering took longer than 1 s and was stopped")
    ]
    assert await busy.proc.wait() == -signal.SIGKILL
    for _ in range(3):
        assert (await _render(pool, "a", SMALL)).subject == "Hi Ada"
    assert busy.proc.pid not in _pids(pool)

    # The replacement joins once it has started; the other worker served meanwhile.
    async def replaced() -> bool:
        return len(_pids(pool)) == 2

    await poll_until(replaced, timeout=30, what="the killed worker's replacement")
    assert len(before & _pids(pool)) == 1


async def test_a_tenant_uses_half_the_workers_and_others_are_not_blocked() -> None:
    # A time limit of its own: b's render must be answered while a's first spin still runs, with
    # that spin taking one of two cores (1 s was close on a busy machine).
    pool = RenderPool(workers=2, memory_mb=512, time_limit_seconds=3.0)
    await pool.start()
    try:
        spins = [asyncio.create_task(_render(pool, "a", SPIN, f"spin{i}")) for i in range(2)]
        await _until_busy(pool)
        # a's second render waits for a's share, so b finds a worker free.
        assert len(pool._busy) == 1
        assert (await _render(pool, "b", SMALL)).text_body == "Hello Ada"
        assert not any(s.done() for s in spins)
        results = await asyncio.gather(*spins, return_exceptions=True)
        assert all(isinstance(r, InvalidArgument) for r in results)
    finally:
        await pool.close()


async def test_a_render_cancelled_while_waiting_gives_its_turn_away(pool: RenderPool) -> None:
    spin = asyncio.create_task(_render(pool, "a", SPIN, "spin"))
    await _until_busy(pool)
    waiting = asyncio.create_task(_render(pool, "a", SMALL))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(InvalidArgument):
        await spin
    assert (await _render(pool, "a", SMALL)).subject == "Hi Ada"


async def test_close_stops_every_worker_even_a_busy_one() -> None:
    pool = RenderPool(workers=2, memory_mb=512, time_limit_seconds=1.0)
    await pool.start()
    workers = list(pool._all)
    spin = asyncio.create_task(_render(pool, "a", SPIN, "spin"))
    await _until_busy(pool)
    await pool.close()
    assert all(w.proc.returncode is not None for w in workers)
    await asyncio.gather(spin, return_exceptions=True)
    await pool.close()


async def test_workers_inherit_no_postwire_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers run tenant-written Jinja: none of the service's secrets is in their environment."""
    secret = "pwinternal_must_not_reach_a_worker"
    monkeypatch.setenv("POSTWIRE_INTERNAL_TOKEN", secret)
    monkeypatch.setenv("POSTWIRE_DATABASE_URL", f"postgresql://u:{secret}@db/postwire")
    monkeypatch.setenv("POSTWIRE_TOKEN_KEYS", f"k1:{secret}")
    pool = RenderPool(workers=1, memory_mb=512, time_limit_seconds=1.0)
    await pool.start()
    try:
        assert (await _render(pool, "t", SMALL)).text_body == "Hello Ada"
        pids = [w.proc.pid for w in pool._idle]
        assert pids
        for pid in pids:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert secret.encode() not in environ
            assert b"POSTWIRE_" not in environ
    finally:
        await pool.close()


async def test_a_worker_killed_just_before_it_is_handed_out_does_not_fail_the_render(pool: RenderPool) -> None:
    # The render stage saw this as a crashing template ("ran out of memory or crashed the
    # renderer") when the kill had not landed yet as the worker was handed out.
    parts = Parts("Hi {{ name }}", "<p>Hi {{ name }}</p>", "")
    for _ in range(10):
        await _render(pool, "t", parts)
        for pid in _pids(pool):
            os.kill(pid, signal.SIGKILL)
        assert (await _render(pool, "t", parts)).html_body == "<p>Hi Ada</p>"


async def test_the_waiting_line_is_bounded_and_the_excess_is_told_to_retry() -> None:
    pool = RenderPool(workers=1, memory_mb=512, time_limit_seconds=1.0, max_waiting=1)
    await pool.start()
    try:
        spinning = asyncio.create_task(_render(pool, "a", SPIN, "spin"))
        await _until_busy(pool)
        waiting = asyncio.create_task(_render(pool, "b", SMALL))
        await asyncio.sleep(0.05)
        with pytest.raises(Unavailable):
            await _render(pool, "c", SMALL)
        # The one in line is served once the spin is stopped at its limit.
        assert (await waiting).subject == "Hi Ada"
        with pytest.raises(InvalidArgument):
            await spinning
    finally:
        await pool.close()

"""Service logs: the lines of one event-loop turn reach stderr in one write, none lost or late."""

from __future__ import annotations

import asyncio
import logging

from libs.runtime import CoalescingHandler


class _Stream:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def _logger(stream: _Stream) -> logging.Logger:
    logger = logging.getLogger(f"test-log-writes-{id(stream)}")
    logger.handlers[:] = [CoalescingHandler(stream)]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


async def test_lines_of_one_loop_turn_go_out_in_one_write_by_the_next_turn() -> None:
    stream = _Stream()
    log = _logger(stream)
    for n in range(5):
        log.info("attempt %d", n)
    assert stream.writes == []
    await asyncio.sleep(0)
    assert stream.writes == ["attempt 0\nattempt 1\nattempt 2\nattempt 3\nattempt 4\n"]


async def test_a_warning_goes_out_at_once_behind_the_lines_before_it() -> None:
    stream = _Stream()
    log = _logger(stream)
    log.info("first")
    log.warning("trouble")
    assert stream.writes == ["first\ntrouble\n"]


def test_outside_an_event_loop_every_line_goes_out_at_once() -> None:
    stream = _Stream()
    log = _logger(stream)
    log.info("starting")
    assert stream.writes == ["starting\n"]


async def test_shutdown_writes_what_is_pending() -> None:
    stream = _Stream()
    log = _logger(stream)
    log.info("last words")
    for handler in log.handlers:
        handler.flush()
    assert stream.writes == ["last words\n"]

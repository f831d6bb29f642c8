"""How a consumer settles a message after its handler: ack, nak with a delay, or term."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from libs.bus import Bus, NotNow, Outcome
from libs.errors import Unavailable
from libs.stage_retry import StageRetry


@dataclass
class FakeMsg:
    num_delivered: int = 1
    subject: str = "postwire.work.route"
    headers: dict[str, str] | None = None
    data: bytes = b""
    settled: list[tuple[str, float | None]] = field(default_factory=list)

    @property
    def metadata(self) -> Any:
        return type("Meta", (), {"num_delivered": self.num_delivered})()

    async def ack(self) -> None:
        self.settled.append(("ack", None))

    async def nak(self, delay: float | None = None) -> None:
        self.settled.append(("nak", delay))

    async def term(self) -> None:
        self.settled.append(("term", None))


@dataclass
class FakeFailures:
    answer: float | None = 7.0
    broken: bool = False
    calls: list[tuple[str, object]] = field(default_factory=list)

    async def unavailable(self, msg: Any, delay: float) -> float | None:
        self.calls.append(("unavailable", delay))
        return self.answer

    async def failed(self, msg: Any, reason: str) -> float | None:
        self.calls.append(("failed", reason))
        if self.broken:
            raise Unavailable("database unavailable")
        return self.answer


def _raising(exc: Exception) -> Any:
    async def handler(msg: Any) -> Outcome:
        raise exc

    return handler


async def _ok(msg: Any) -> Outcome:
    return Outcome.ACK


async def _settle(handler: Any, failures: FakeFailures | None, *, delivered: int = 1) -> FakeMsg:
    msg = FakeMsg(num_delivered=delivered)
    bus = Bus(None, None)  # type: ignore[arg-type]  # settling uses only the message
    await bus._handle(msg, handler, "router", failures, StageRetry())  # type: ignore[arg-type]
    return msg


async def test_success_is_acked() -> None:
    assert (await _settle(_ok, FakeFailures())).settled == [("ack", None)]


async def test_an_outage_is_not_counted_and_waits_as_the_stage_says() -> None:
    failures = FakeFailures(answer=7.0)
    msg = await _settle(_raising(ConnectionRefusedError()), failures, delivered=3)
    assert failures.calls == [("unavailable", 8.0)]
    assert msg.settled == [("nak", 7.0)]


async def test_a_bug_is_counted_with_stage_and_class_and_terminated_when_given_up() -> None:
    failures = FakeFailures(answer=None)
    msg = await _settle(_raising(ValueError("secret@example.com")), failures)
    assert failures.calls == [("failed", "router: ValueError")]
    assert msg.settled == [("term", None)]


async def test_bookkeeping_that_fails_retries_without_counting() -> None:
    msg = await _settle(_raising(KeyError("x")), FakeFailures(broken=True), delivered=2)
    assert msg.settled == [("nak", 4.0)]


async def test_without_bookkeeping_a_bug_backs_off_by_delivery_count() -> None:
    msg = await _settle(_raising(KeyError("x")), None, delivered=4)
    assert msg.settled == [("nak", 16.0)]


async def test_not_now_is_naked_without_bookkeeping_so_no_give_up_can_overwrite_an_outcome() -> None:
    # The chaos tarpit run: a message whose DELIVERED outcome was still being committed came back
    # on the retry lane past its give-up time; treated as an outage, it was expired first.
    failures = FakeFailures(answer=None)
    msg = await _settle(_raising(NotNow("an outcome is being recorded", retry_after=1.5)), failures, delivered=9)
    assert failures.calls == []
    assert msg.settled == [("nak", 1.5)]

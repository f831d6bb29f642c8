"""The inbound use case with fake ports: which reports become which recipient moves and events,
matched by which token, and what is counted and dropped."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from postwire.internal.v1 import bus_pb2
from postwire.v1 import message_pb2

from libs.return_path import ReturnPathConfig, ReturnPathTokens
from libs.testing.reports import arf_report, dsn_report, original_message
from libs.token_keys import KeyRing, generate_token_keys
from services.inbound.feedback import AsyncBounce, Complaint, Target, bounce_moves
from services.inbound.recipients import Kind, Rcpt, accept_rcpt
from services.inbound.take_report import TakeReport

TOKENS = ReturnPathTokens(KeyRing.parse(generate_token_keys("unit")))
OTHER_RING = ReturnPathTokens(KeyRing.parse(generate_token_keys("other")))
CONFIG = ReturnPathConfig(host="bounces.postwire.example", label="pw-bounces")
MESSAGE = str(uuid.uuid4())


class FakeStore:
    def __init__(self) -> None:
        self.bounces: list[AsyncBounce] = []
        self.complaints: list[Complaint] = []
        self.counts: list[str] = []

    async def record_bounce(self, bounce: AsyncBounce) -> tuple[str, bus_pb2.EventEnvelope | None]:
        self.bounces.append(bounce)
        return "bounced", bus_pb2.EventEnvelope(tenant_id="t")

    async def record_complaint(self, complaint: Complaint) -> tuple[str, bus_pb2.EventEnvelope | None]:
        self.complaints.append(complaint)
        return "complained", bus_pb2.EventEnvelope(tenant_id="t")

    async def count(self, name: str) -> None:
        self.counts.append(name)


def _take() -> tuple[TakeReport, FakeStore, list[bus_pb2.EventEnvelope]]:
    store = FakeStore()
    published: list[bus_pb2.EventEnvelope] = []

    async def publish(events: Sequence[bus_pb2.EventEnvelope]) -> None:
        published.extend(events)

    return TakeReport(store, publish, TOKENS), store, published


def _rp(token: str) -> Rcpt:
    return Rcpt(Kind.RETURN_PATH, token)


async def test_a_dsn_to_a_return_path_is_a_categorised_bounce_of_that_recipient() -> None:
    take, store, published = _take()
    token = TOKENS.mint(MESSAGE, 3)
    assert await take(dsn_report(recipient="gone@example.net"), [_rp(token)]) == "bounced"
    (bounce,) = store.bounces
    assert bounce.target == Target(MESSAGE, 3)
    assert (bounce.reply.code, bounce.reply.enhanced) == (550, "5.1.1")
    assert bounce.category == message_pb2.BOUNCE_CATEGORY_HARD
    assert bounce.remote_host == "mx1.example.net"
    assert "asynchronous bounce (rfc3464)" in bounce.reason
    assert len(published) == 1


async def test_a_dsn_to_postmaster_is_matched_by_the_returned_original() -> None:
    take, store, _ = _take()
    token = TOKENS.mint(MESSAGE, 1)
    raw = dsn_report(
        recipient="gone@example.net", original=original_message(feedback_id=token), headers_only=True
    )
    assert await take(raw, [Rcpt(Kind.POSTMASTER)]) == "bounced"
    assert store.bounces[0].target == Target(MESSAGE, 1)


async def test_a_delay_notice_is_ignored_and_garbage_is_malformed() -> None:
    take, store, published = _take()
    token = TOKENS.mint(MESSAGE, 0)
    assert (
        await take(dsn_report(recipient="x@example.net", action="delayed", status="4.4.7"), [_rp(token)])
        == "ignored"
    )
    assert await take(b"\x00\xff garbage\r\n.\r\n", [_rp(token)]) == "malformed"
    assert store.counts == ["ignored", "malformed"] and not store.bounces and not published


async def test_a_complaint_is_matched_by_return_path_then_by_the_signed_header() -> None:
    take, store, _ = _take()
    by_path = TOKENS.mint(MESSAGE, 0)
    raw = arf_report(original=original_message(return_path=f"bounces+{by_path}@{CONFIG.host}"))
    assert await take(raw, [Rcpt(Kind.FEEDBACK_LOOP)]) == "complained"
    by_header = TOKENS.mint(MESSAGE, 2)
    raw = arf_report(original=original_message(feedback_id=by_header), headers_only=False)
    assert await take(raw, [Rcpt(Kind.FEEDBACK_LOOP)]) == "complained"
    assert [c.target for c in store.complaints] == [Target(MESSAGE, 0), Target(MESSAGE, 2)]
    assert store.complaints[0].feedback_type == "abuse"


async def test_reports_without_a_valid_token_are_unmatched() -> None:
    take, store, published = _take()
    forged = OTHER_RING.mint(MESSAGE, 0)
    raw = arf_report(
        original=original_message(return_path=f"bounces+{forged}@{CONFIG.host}", feedback_id=forged)
    )
    assert await take(raw, [Rcpt(Kind.FEEDBACK_LOOP)]) == "unmatched"
    assert await take(dsn_report(recipient="a@example.net"), [Rcpt(Kind.POSTMASTER)]) == "unmatched"
    assert await take(arf_report(original=original_message(), feedback_type="not-spam"), []) == "ignored"
    assert store.counts == ["unmatched", "unmatched", "ignored"] and not published


def test_rcpt_rules() -> None:
    token = TOKENS.mint(MESSAGE, 0)
    assert accept_rcpt(f"bounces+{token}@{CONFIG.host}", CONFIG, TOKENS) == _rp(token)
    assert accept_rcpt(f"BOUNCES+{token.upper()}@pw-bounces.shop.example", CONFIG, TOKENS) is not None
    assert accept_rcpt(f"fbl@{CONFIG.host}", CONFIG, TOKENS) == Rcpt(Kind.FEEDBACK_LOOP)
    assert accept_rcpt("postmaster@pw-bounces.shop.example", CONFIG, TOKENS) == Rcpt(Kind.POSTMASTER)
    assert accept_rcpt("Postmaster", CONFIG, TOKENS) == Rcpt(Kind.POSTMASTER)
    refused = [
        f"bounces+{OTHER_RING.mint(MESSAGE, 0)}@{CONFIG.host}",  # forged: another ring's token
        f"bounces+{token}@shop.example",  # not a return-path domain
        f"bounces+{token}@pw-bounces.example",  # the label needs a domain under it... and a TLD
        "fbl@pw-bounces.shop.example",  # the loop address lives on the host only
        f"someone@{CONFIG.host}",
        "bounces+@" + CONFIG.host,
        "",
    ]
    assert [accept_rcpt(a, CONFIG, TOKENS) for a in refused] == [None] * len(refused)


def test_only_live_states_move_to_bounced() -> None:
    assert [s for s in ("queued", "deferred", "delivered") if bounce_moves(s)] == [
        "queued",
        "deferred",
        "delivered",
    ]
    assert not any(bounce_moves(s) for s in ("bounced", "expired", "failed", "suppressed", "accepted"))


def test_no_bytes_make_the_decision_raise() -> None:
    """Reports mangled at random (seeded): every one is decided, none raises."""
    import random

    from services.inbound.feedback import Dropped, decide

    rng = random.Random(11)
    token = TOKENS.mint(MESSAGE, 0)
    samples = [
        dsn_report(recipient="a@example.net", original=original_message(feedback_id=token)),
        arf_report(original=original_message(return_path=f"bounces+{token}@{CONFIG.host}")),
    ]
    for _ in range(300):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 40)):
            if not data:
                break
            at = rng.randrange(len(data))
            if rng.random() < 0.5:
                data[at] = rng.randrange(256)
            else:
                del data[at : at + rng.randint(1, 200)]
        decision = decide(bytes(data), [token] if rng.random() < 0.5 else [], TOKENS)
        assert isinstance(decision, AsyncBounce | Complaint | Dropped)

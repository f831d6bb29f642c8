"""SMTP replies to verdicts: what a recipient's state becomes after an attempt."""

from __future__ import annotations

import pytest

from libs.mail.smtp_outcome import Reply, Verdict, classify, parse_reply


@pytest.mark.parametrize(
    ("code", "message", "verdict", "enhanced"),
    [
        (250, "2.0.0 Ok: queued as 4BXk2", Verdict.DELIVERED, "2.0.0"),
        (250, "OK", Verdict.DELIVERED, ""),
        (251, "User not local; will forward", Verdict.DELIVERED, ""),
        (451, "4.7.1 Try again later", Verdict.DEFERRED, "4.7.1"),
        (450, "Mailbox busy", Verdict.DEFERRED, ""),
        (421, "mx.example.org Service not available, closing channel", Verdict.DEFERRED, ""),
        (421, "4.3.2 System shutting down", Verdict.DEFERRED, "4.3.2"),
        (550, "5.1.1 <ada@example.org>: Recipient address rejected: User unknown", Verdict.BOUNCED, "5.1.1"),
        (554, "Transaction failed", Verdict.BOUNCED, ""),
        (552, "5.3.4 Message size exceeds fixed limit", Verdict.BOUNCED, "5.3.4"),
        # The enhanced code wins: a "550 4.7.1" is a temporary policy block in practice.
        (550, "4.7.1 Greylisted, please try again later", Verdict.DEFERRED, "4.7.1"),
        # No reply at all (refused, dropped, timed out) is retried.
        (0, "Connection refused", Verdict.DEFERRED, ""),
        (0, "", Verdict.DEFERRED, ""),
    ],
)
def test_classify(code: int, message: str, verdict: Verdict, enhanced: str) -> None:
    reply = parse_reply(code, message)
    assert reply.code == code
    assert reply.enhanced == enhanced
    assert classify(reply).verdict is verdict


@pytest.mark.parametrize(
    ("message", "enhanced"),
    [
        ("5.1.1 User unknown", "5.1.1"),
        ("5.7.26 Unauthenticated email is not accepted", "5.7.26"),
        ("5.123.456 odd but valid", "5.123.456"),
        ("  5.1.1   leading whitespace", "5.1.1"),
        ("User unknown 5.1.1", ""),
        ("6.1.1 not a class", ""),
        ("5.1.1234 too many digits", ""),
        ("5.1 too few parts", ""),
    ],
)
def test_enhanced_code_is_taken_from_the_start_of_the_text(message: str, enhanced: str) -> None:
    assert parse_reply(550, message).enhanced == enhanced


def test_whitespace_is_collapsed() -> None:
    reply = parse_reply(550, "  5.1.1   <ada@example.org>:\r\n\tRecipient   address rejected \n")
    assert reply.text == "5.1.1 <ada@example.org>: Recipient address rejected"


def test_text_is_truncated_to_512_characters_after_collapsing() -> None:
    reply = parse_reply(550, "5.1.1" + "  word" * 200)
    assert len(reply.text) == 512
    assert reply.text == ("5.1.1" + " word" * 200)[:512]
    assert reply.enhanced == "5.1.1"


def test_short_text_is_kept_whole() -> None:
    assert parse_reply(250, "Ok").text == "Ok"


def test_reply_can_be_built_directly() -> None:
    assert classify(Reply(code=550, enhanced="", text="")).verdict is Verdict.BOUNCED
    assert classify(Reply(code=503, enhanced="4.5.0", text="")).verdict is Verdict.DEFERRED

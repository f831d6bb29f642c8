"""RFC 5965 feedback reports: the feedback type and the token-bearing headers of the original."""

from __future__ import annotations

from libs.mail.arf import parse_arf
from libs.testing.reports import arf_report, dsn_report, original_message


def test_report_with_original_headers_only() -> None:
    original = original_message(return_path="bounces+tok@bounces.example", feedback_id="tok")
    report = parse_arf(
        arf_report(original=original, rcpt_to="rcpt@example.net", mail_from="bounces+tok@bounces.example")
    )
    assert report is not None and report.is_complaint
    assert report.feedback_type == "abuse"
    assert report.user_agent == "ExampleFBL/1.0"
    assert report.original_rcpt_to == "rcpt@example.net"
    assert report.original_mail_from == "bounces+tok@bounces.example"
    assert report.original is not None
    assert (report.original.return_path, report.original.feedback_id) == (
        "bounces+tok@bounces.example",
        "tok",
    )


def test_report_with_the_whole_original_and_no_return_path() -> None:
    # Microsoft's loop strips the Return-Path; the signed X-Postwire-Feedback-Id remains.
    report = parse_arf(arf_report(original=original_message(feedback_id="tok2"), headers_only=False))
    assert report is not None and report.original is not None
    assert (report.original.return_path, report.original.feedback_id) == ("", "tok2")


def test_not_spam_is_not_a_complaint() -> None:
    report = parse_arf(arf_report(original=original_message(), feedback_type="not-spam"))
    assert report is not None and not report.is_complaint


def test_other_mail_is_not_a_feedback_report() -> None:
    assert parse_arf(dsn_report(recipient="a@example.net")) is None
    assert parse_arf(b"Subject: hi\r\n\r\nhello") is None
    assert parse_arf(b"\xff\x00" * 100) is None

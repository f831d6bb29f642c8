"""The bounce table: what each reply does to a recipient (delivered, deferred, bounced) and which
category its event carries. Provider texts are from DELIVERY.md §4 (sisimai's observed replies)."""

from __future__ import annotations

import pytest
from postwire.v1 import message_pb2

from libs.mail.bounce_classes import RULES, Rule, first_rule
from libs.mail.smtp_outcome import Classification, Reply, Verdict, classify, parse_reply

HARD = message_pb2.BOUNCE_CATEGORY_HARD
SOFT = message_pb2.BOUNCE_CATEGORY_SOFT
BLOCK = message_pb2.BOUNCE_CATEGORY_BLOCK
THROTTLE = message_pb2.BOUNCE_CATEGORY_THROTTLE
CONFIG = message_pb2.BOUNCE_CATEGORY_CONFIG
NONE = message_pb2.BOUNCE_CATEGORY_UNSPECIFIED
DELIVERED, DEFERRED, BOUNCED = Verdict.DELIVERED, Verdict.DEFERRED, Verdict.BOUNCED

EXAMPLES = [
    # The brief's examples.
    (550, "5.1.1 <ada@example.org>: Recipient address rejected: User unknown", BOUNCED, HARD),
    (552, "5.2.2 Mailbox full", DEFERRED, SOFT),
    (452, "4.2.2 The email account that you tried to reach is over quota. - gsmtp", DEFERRED, SOFT),
    (550, "5.2.2 Mailbox full", DEFERRED, SOFT),
    (
        421,
        "4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP"
        " address. To protect our users from spam, mail sent from your IP address has been temporarily"
        " rate limited. - gsmtp",
        DEFERRED,
        THROTTLE,
    ),
    (
        421,
        "4.7.28 This message has exceeded its quota for sending messages with the same Message-ID - gsmtp",
        DEFERRED,
        THROTTLE,
    ),
    (
        451,
        "4.7.650 The mail server [192.0.2.7] has been temporarily rate limited due to IP reputation."
        " For e-mail delivery information, see https://aka.ms/postmaster (S775)",
        DEFERRED,
        THROTTLE,
    ),
    (
        451,
        "4.7.651 The mail server [192.0.2.7] has been temporarily rate limited due to IP reputation (S3114)",
        DEFERRED,
        THROTTLE,
    ),
    (
        421,
        "4.7.0 [TSS04] Messages from 192.0.2.7 temporarily deferred due to unexpected volume or user"
        " complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
        DEFERRED,
        THROTTLE,
    ),
    (
        553,
        "5.7.2 [TSS09] All messages from 192.0.2.7 will be permanently deferred; Retrying will NOT"
        " succeed. See https://postmaster.yahooinc.com/error-codes",
        BOUNCED,
        BLOCK,
    ),
    (553, "5.7.2 [TSS11] All messages from 192.0.2.7 will be permanently deferred", BOUNCED, BLOCK),
    (
        550,
        "5.7.1 Unfortunately, messages from [192.0.2.7] weren't sent. Please contact your Internet service"
        " provider since part of their network is on our block list (S3150).",
        BOUNCED,
        BLOCK,
    ),
    (
        550,
        "5.7.26 This mail is unauthenticated, which poses a security risk to the sender and Gmail users,"
        " and has been blocked. The sender must authenticate with at least one of SPF or DKIM. - gsmtp",
        BOUNCED,
        CONFIG,
    ),
    (
        550,
        "5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy. - gsmtp",
        BOUNCED,
        CONFIG,
    ),
    (
        550,
        "5.7.9 This mail has been blocked because the sender is unauthenticated. Yahoo requires all"
        " senders to authenticate with either SPF or DKIM.",
        BOUNCED,
        CONFIG,
    ),
    (
        550,
        "5.7.25 The IP address sending this message does not have a PTR record setup, or the"
        " corresponding forward DNS entry does not point to the sending IP. - gsmtp",
        BOUNCED,
        CONFIG,
    ),
    (556, "5.1.10 Recipient address has null MX", BOUNCED, HARD),
    (452, "4.5.3 Too many recipients", DEFERRED, THROTTLE),
    (552, "5.5.3 Too many recipients", DEFERRED, THROTTLE),
    (552, "5.3.4 Message size exceeds fixed limit", BOUNCED, BLOCK),
    # The enhanced class wins: a "550 4.7.1" is temporary.
    (550, "4.7.1 Greylisted, please try again later", DEFERRED, SOFT),
    # Gmail, the rest of DELIVERY.md §4.
    (
        421,
        "4.7.0 This message is suspicious due to the very low reputation of the sending domain. - gsmtp",
        DEFERRED,
        BLOCK,
    ),
    (
        421,
        "4.7.0 This message is suspicious due to the nature of the content and/or the links within. - gsmtp",
        DEFERRED,
        BLOCK,
    ),
    (421, "4.7.26 This mail has been rate limited because it is unauthenticated. - gsmtp", DEFERRED, CONFIG),
    (
        550,
        "5.7.26 Unauthenticated email from example.com is not accepted due to domain's SPF record with a"
        " hard fail policy (-all). - gsmtp",
        BOUNCED,
        CONFIG,
    ),
    (
        421,
        "4.7.27 Your email has been rate limited because SPF authentication didn't pass. - gsmtp",
        DEFERRED,
        CONFIG,
    ),
    (
        421,
        "4.7.30 Your email has been rate limited because DKIM authentication didn't pass. - gsmtp",
        DEFERRED,
        CONFIG,
    ),
    (
        421,
        "4.7.32 Your email has been rate limited because the From: header (RFC5322) in this message isn't"
        " aligned with either the authenticated SPF or DKIM organizational domain. - gsmtp",
        DEFERRED,
        CONFIG,
    ),
    (421, "4.7.23 The sending IP does not have a PTR record. - gsmtp", DEFERRED, CONFIG),
    (
        550,
        "5.1.1 The email account that you tried to reach does not exist. Please try double-checking the"
        " recipient's email address for typos or unnecessary spaces. - gsmtp",
        BOUNCED,
        HARD,
    ),
    (
        450,
        "4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional"
        " messages from being delivered. - gsmtp",
        DEFERRED,
        SOFT,
    ),
    (550, "5.2.1 The email account that you tried to reach is disabled. - gsmtp", BOUNCED, HARD),
    (421, "4.7.0 TLS required for RCPT domain, closing connection. - gsmtp", DEFERRED, CONFIG),
    # Microsoft, the rest.
    (451, "4.7.500 Server busy. Please try again later from [192.0.2.7]. (AS761)", DEFERRED, THROTTLE),
    (
        451,
        "4.7.321 starttls-not-supported: Destination mail server must support TLS to receive mail",
        DEFERRED,
        CONFIG,
    ),
    (
        451,
        "4.7.325 certificate-host-mismatch: Remote certificate MUST have a subject that matches",
        DEFERRED,
        CONFIG,
    ),
    (
        550,
        "5.7.515 Access denied, sending domain example.com does not meet the required authentication level.",
        BOUNCED,
        CONFIG,
    ),
    (550, "5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.", BOUNCED, BLOCK),
    # Yahoo/AOL, the rest.
    (
        554,
        "5.7.9 Message not accepted for policy reasons. See https://postmaster.yahooinc.com/error-codes",
        BOUNCED,
        BLOCK,
    ),
    (
        553,
        "5.7.1 [BL21] Connections will not be accepted from 192.0.2.7, because the ip is in Spamhaus's list",
        BOUNCED,
        BLOCK,
    ),
    (553, "5.7.1 [BL23] Connections not accepted from IP addresses on Spamhaus XBL", BOUNCED, BLOCK),
    (451, "Message temporarily deferred due to unresolvable RFC.5321 from domain", DEFERRED, CONFIG),
    (
        554,
        "delivery error: dd This user doesn't have a yahoo.com account (ada@yahoo.com) [0] - mta1.mail.yahoo.com",
        BOUNCED,
        HARD,
    ),
    # Codes without a provider text.
    (550, "5.1.2 Host unknown (Name server: example.invalid: host not found)", BOUNCED, HARD),
    (550, "5.1.6 Recipient has moved", BOUNCED, HARD),
    (553, "5.1.3 Bad destination mailbox address syntax", BOUNCED, HARD),
    (550, "5.1.7 Sender address has no MX", BOUNCED, CONFIG),
    (553, "5.1.8 Bad sender's system address", BOUNCED, CONFIG),
    (550, "5.1.0 <bounces@example.com>: Sender address rejected: Domain not found", BOUNCED, CONFIG),
    (525, "5.7.13 User account disabled", BOUNCED, HARD),
    (550, "5.7.1 Delivery not authorized, message refused", BOUNCED, BLOCK),
    (535, "5.7.8 Authentication credentials invalid", BOUNCED, CONFIG),
    (530, "5.7.0 Authentication required", BOUNCED, CONFIG),
    (530, "Must issue a STARTTLS command first", BOUNCED, CONFIG),
    (554, "5.6.0 Message rejected", BOUNCED, BLOCK),
    (554, "Transaction failed", BOUNCED, BLOCK),
    (550, "Requested action not taken: mailbox unavailable", BOUNCED, BLOCK),
    (550, "No such user here", BOUNCED, HARD),
    (550, "<ada@example.org>... User unknown", BOUNCED, HARD),
    (552, "Requested mail action aborted: exceeded storage allocation", DEFERRED, SOFT),
    (452, "Too many recipients", DEFERRED, THROTTLE),
    (421, "Too many concurrent SMTP connections; please try again later", DEFERRED, THROTTLE),
    (451, "4.7.1 Try again later", DEFERRED, SOFT),
    (451, "4.3.0 Temporary failure at end of data", DEFERRED, SOFT),
    (450, "4.1.1 <ada@example.org>: Recipient address rejected: unverified address", DEFERRED, SOFT),
    (421, "mx.example.org Service not available, closing transmission channel", DEFERRED, SOFT),
    (421, "4.3.2 System shutting down", DEFERRED, SOFT),
    (450, "Mailbox busy", DEFERRED, SOFT),
    (521, "5.3.2 mx.example.org does not accept mail", BOUNCED, HARD),
    # A 4xx never bounces, whatever its enhanced code says.
    (450, "5.1.1 User unknown", DEFERRED, SOFT),
    # Success carries no category.
    (250, "2.0.0 Ok: queued as 4BXk2", DELIVERED, NONE),
    (251, "User not local; will forward", DELIVERED, NONE),
]


@pytest.mark.parametrize(("code", "message", "verdict", "category"), EXAMPLES)
def test_reply_is_classified(code: int, message: str, verdict: Verdict, category: int) -> None:
    assert classify(parse_reply(code, message)) == Classification(verdict, category)


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Connection refused", SOFT),
        ("connection lost: Server disconnected unexpectedly", SOFT),
        ("", SOFT),
        ("timed out waiting for the reply", SOFT),
        ("TLS handshake failed: certificate verify failed: unable to get local issuer certificate", CONFIG),
        ("server offers no STARTTLS and TLS is required", CONFIG),
    ],
)
def test_no_reply_at_all_is_deferred(text: str, category: int) -> None:
    assert classify(Reply(code=0, enhanced="", text=text)) == Classification(DEFERRED, category)


def test_a_synthetic_reply_for_a_blocked_destination_is_config() -> None:
    reply = parse_reply(550, "5.4.4 blocked destination: mx.example.org resolves to 10.0.0.7")
    assert classify(reply) == Classification(BOUNCED, CONFIG)


def test_the_table_never_defers_as_hard() -> None:
    # HARD means "suppress this address"; a retry that may still succeed must never claim it.
    for code in (421, 450, 451, 452):
        for enhanced in ("4.1.1", "4.1.10", "4.2.1", "4.7.13", "4.7.17"):
            result = classify(parse_reply(code, f"{enhanced} User unknown, no such user"))
            assert result.verdict is DEFERRED
            assert result.category != HARD


def test_every_rule_has_a_unique_name() -> None:
    names = [rule.name for rule in RULES]
    assert all(names) and len(set(names)) == len(names)


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_every_rule_is_reached_by_its_own_example(rule: Rule) -> None:
    # An earlier, broader row would shadow a later one without anyone noticing.
    code, _, message = rule.example.partition(" ")
    reply = parse_reply(int(code), message)
    assert first_rule(reply.code, reply.enhanced, reply.text) is rule


def test_the_table_covers_every_bounce_category_and_invents_none() -> None:
    """Categories are the proto's values: every one (but UNSPECIFIED) is some row's, no row has
    another, so a category added to the proto without a rule shows up here."""
    proto = {value for name, value in message_pb2.BounceCategory.items() if value != NONE}
    assert {rule.category for rule in RULES} == proto

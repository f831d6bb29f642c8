"""The bounce table: which kind of failure an SMTP reply reports; pure.

One ordered list of rows, first match wins (KumoMTA's rule). A row matches the basic code, the
enhanced status code and/or the reply text, and names a `postwire.v1.BounceCategory`; a row may
also say the reply is a "persistent transient" failure (RFC 3463's words for X.2.2), which is
retried even when the basic code is 5xx. Whether a reply bounces or defers is otherwise decided by
its class (smtp_outcome.classify); the category only says whose problem it is, and only HARD
suppresses the address, so a HARD row matches 5.x.x codes alone: a mistaken HARD loses a real
recipient for good, a mistaken BLOCK costs one bounce.

Sources: DELIVERY.md §3 (IANA enhanced codes, KumoMTA's iana.toml) and §4 (Gmail, Microsoft and
Yahoo/AOL replies as sisimai records them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postwire.v1 import message_pb2

__all__ = ["RULES", "Rule", "first_rule"]

HARD = message_pb2.BOUNCE_CATEGORY_HARD
SOFT = message_pb2.BOUNCE_CATEGORY_SOFT
BLOCK = message_pb2.BOUNCE_CATEGORY_BLOCK
THROTTLE = message_pb2.BOUNCE_CATEGORY_THROTTLE
CONFIG = message_pb2.BOUNCE_CATEGORY_CONFIG


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    category: message_pb2.BounceCategory.ValueType
    # A reply this row is the first to match ("<code> <text>"); the unit tests check each one,
    # so a broader row added above cannot silently shadow it.
    example: str
    code: re.Pattern[str] | None = None  # full match on the basic code, e.g. "550"
    status: re.Pattern[str] | None = None  # full match on the enhanced code, "" when there is none
    text: re.Pattern[str] | None = None  # searched in the whole reply text, case-insensitively
    # Retried even when the basic code is 5xx: the condition is expected to clear (mailbox full).
    always_defer: bool = False

    def matches(self, code: int, enhanced: str, text: str) -> bool:
        return (
            (self.code is None or self.code.fullmatch(f"{code:03d}") is not None)
            and (self.status is None or self.status.fullmatch(enhanced) is not None)
            and (self.text is None or self.text.search(text) is not None)
        )


def _row(
    name: str,
    category: message_pb2.BounceCategory.ValueType,
    example: str,
    *,
    code: str | None = None,
    status: str | None = None,
    text: str | None = None,
    always_defer: bool = False,
) -> Rule:
    return Rule(
        name,
        category,
        example,
        code=None if code is None else re.compile(code),
        status=None if status is None else re.compile(status),
        text=None if text is None else re.compile(text, re.IGNORECASE),
        always_defer=always_defer,
    )


# No enhanced code, or one that says nothing ("X.0.0"): only the text can tell.
_UNSPECIFIC = r"|[45]\.0\.0"
_MAILBOX_FULL = r"mailbox (is )?full|over ?quota|quota exceeded|exceeded (its |the )?storage|insufficient (system )?storage"
_NO_SUCH_USER = (
    r"user unknown|unknown (user|recipient|mailbox)|no such (user|mailbox|recipient|address|account)"
    r"|(user|recipient|mailbox|address|account) (does not|doesn't) exist|invalid (recipient|mailbox)"
    r"|doesn't have an? \S+ account"
)
_RATE = r"rate limit|too many (\w+ ){0,2}(connections|messages|sessions)|throttl|slow down"

RULES: tuple[Rule, ...] = (
    # -- Provider texts first: they are more precise than the codes they come with. --
    # Yahoo's IP block is a 553 5.7.2 and a TSS04 a 4.7.0; only the bracketed tag tells.
    _row(
        "yahoo-ip-block",
        BLOCK,
        "553 5.7.2 [TSS09] All messages from 192.0.2.7 will be permanently deferred",
        text=r"\[TSS(09|11)\]|\[BL2[13]\]",
    ),
    _row(
        "yahoo-volume",
        THROTTLE,
        "421 4.7.0 [TSS04] Messages from 192.0.2.7 temporarily deferred due to unexpected volume",
        text=r"\[TSS04\]",
    ),
    _row(
        "yahoo-unresolvable-sender",
        CONFIG,
        "451 Message temporarily deferred due to unresolvable RFC.5321 from domain",
        text=r"unresolvable RFC.?5321 from domain",
    ),
    # 5.7.9 is Yahoo's "unauthenticated" as well as its "policy reasons": the text decides.
    _row(
        "unauthenticated-sender",
        CONFIG,
        "550 5.7.9 This mail has been blocked because the sender is unauthenticated.",
        status=r"[45]\.7\.\d+",
        text=r"unauthenticated|authentication level",
    ),
    _row(
        "gmail-reputation",
        BLOCK,
        "421 4.7.0 This message is suspicious due to the very low reputation of the sending domain.",
        status=r"4\.7\.0",
        text=r"suspicious|reputation of the sending",
    ),
    # Also a failure with no reply at all (code 0): a handshake or certificate the worker refused.
    _row(
        "tls-required",
        CONFIG,
        "421 4.7.0 TLS required for RCPT domain, closing connection.",
        status=r"[45]\.7\.0|" + _UNSPECIFIC,
        text=r"\bTLS\b|STARTTLS|encryption|certificate",
    ),
    # -- Enhanced status codes (RFC 3463 and the IANA registry, DELIVERY.md §3d). --
    _row("sender-address", CONFIG, "553 5.1.8 Bad sender's system address", status=r"[45]\.1\.[78]"),
    _row(
        "sender-rejected",
        CONFIG,
        "550 5.1.0 <bounces@example.com>: Sender address rejected: Domain not found",
        status=r"5\.1\.0",
        text=r"sender",
    ),
    # Bad mailbox (1), system (2), syntax (3), ambiguous (4), moved (6), null MX (10).
    _row("no-such-address", HARD, "550 5.1.1 User unknown", status=r"5\.1\.(0|1|2|3|4|6|10)"),
    _row(
        "mailbox-disabled",
        HARD,
        "550 5.2.1 The email account that you tried to reach is disabled",
        status=r"5\.2\.1",
    ),
    # "Should be used as a persistent transient failure": retried until the retry window ends.
    _row("mailbox-full", SOFT, "552 5.2.2 Mailbox full", status=r"[45]\.2\.2", always_defer=True),
    # Too big for this mailbox or system: the address is fine, this message is not.
    _row("message-too-big", BLOCK, "552 5.3.4 Message size exceeds fixed limit", status=r"[45]\.(2\.3|3\.4)"),
    # RFC 5321 §4.5.3.1.10: too many recipients is retried with fewer, even as 552.
    _row(
        "too-many-recipients",
        THROTTLE,
        "452 4.5.3 Too many recipients",
        status=r"[45]\.5\.3",
        always_defer=True,
    ),
    # Account disabled (13), mailbox (17) or domain (18) owner changed.
    _row("account-gone", HARD, "525 5.7.13 User account disabled", status=r"5\.7\.1[378]"),
    _row(
        "mail-flood", THROTTLE, "421 4.7.28 unusual rate of unsolicited mail - gsmtp", status=r"[45]\.7\.28"
    ),
    # Microsoft's IP-reputation throttles (S775, S3114) and "server busy" (AS761).
    _row(
        "microsoft-throttle",
        THROTTLE,
        "451 4.7.650 The mail server [192.0.2.7] has been temporarily rate limited due to IP reputation.",
        status=r"[45]\.7\.(500|650|651)",
    ),
    # Microsoft's outbound TLS/DANE failures (starttls-not-supported, tlsa-invalid, ...).
    _row(
        "microsoft-tls",
        CONFIG,
        "451 4.7.321 starttls-not-supported: Destination mail server must support TLS",
        status=r"[45]\.7\.32[1-5]",
    ),
    # Credentials (8), encryption (10, 11), DKIM (20-22), SPF (23, 24), PTR (25), DMARC and
    # other multiple failures (26), sender null MX / Gmail SPF (27), ARC (29), REQUIRETLS / Gmail
    # DKIM (30), Gmail alignment (32).
    _row(
        "authentication",
        CONFIG,
        "550 5.7.25 The IP address sending this message does not have a PTR record",
        status=r"[45]\.7\.(8|10|11|2[0-7]|29|30|32)",
    ),
    # Relays: "530 Authentication required", "535 Authentication failed", "538 Encryption required".
    _row("relay-authentication", CONFIG, "535 Authentication failed", code=r"53[058]"),
    # Hosts that accept no mail at all (RFC 7504): the domain cannot receive.
    _row("no-mail-host", HARD, "521 5.3.2 mx.example.org does not accept mail", code=r"521|556"),
    # The worker's own verdict on a destination it refuses to connect to.
    _row(
        "blocked-destination",
        CONFIG,
        "550 5.4.4 blocked destination: mx.example.org resolves to 10.0.0.7",
        text=r"blocked destination",
    ),
    # -- Texts without a telling code. --
    _row(
        "mailbox-full-text",
        SOFT,
        "552 Requested mail action aborted: exceeded storage allocation",
        status=_UNSPECIFIC,
        text=_MAILBOX_FULL,
        always_defer=True,
    ),
    _row(
        "too-many-recipients-text",
        THROTTLE,
        "452 Too many recipients",
        status=_UNSPECIFIC,
        text=r"too many recipients",
        always_defer=True,
    ),
    _row("rate-text", THROTTLE, "421 Too many concurrent SMTP connections", text=_RATE),
    _row(
        "no-such-user-text",
        HARD,
        "550 No such user here",
        code=r"5\d\d",
        status=_UNSPECIFIC,
        text=_NO_SUCH_USER,
    ),
    # -- Defaults by class. --
    _row("refused", BLOCK, "550 5.7.1 Delivery not authorized, message refused", status=r"5\.7\.\d+"),
    _row("other-temporary", THROTTLE, "421 4.7.0 Try again later, closing connection", status=r"4\.7\.0"),
    _row("other-permanent", BLOCK, "554 Transaction failed", code=r"5\d\d", status=r"|5\.\d+\.\d+"),
    _row("other", SOFT, "451 4.3.0 Temporary failure"),
)


def first_rule(code: int, enhanced: str, text: str) -> Rule:
    """The first row matching a reply; the last row matches every reply."""
    for rule in RULES:
        if rule.matches(code, enhanced, text):
            return rule
    raise AssertionError("the last rule matches every reply")

"""The bytes a transaction puts on the wire are aiosmtplib's, whatever shortcut computes them:
line endings and dot-stuffing of the body (RELIABILITY finding 11) and the quoted MAIL FROM /
RCPT TO addresses, compared with aiosmtplib's own functions on random input."""

from __future__ import annotations

import random

import pytest
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from services.mta_worker.smtp_session import _dot_stuffed, _Envelope, _normalised, _quoted


def test_body_bytes_match_aiosmtplib() -> None:
    rng = random.Random(14)
    cases = [b"", b".", b"..\r\n", b"a\r\n.b", b"a\n.b\r.c", b"a\r\r\n\n", b"x\r\n\r\n.\r\n"]
    cases += [bytes(rng.choice(b"ab.\r\n \t") for _ in range(rng.randint(0, 14))) for _ in range(30_000)]
    for data in cases:
        normalised = normalize_message_line_endings(data)
        assert _normalised(data) == normalised, data
        assert _dot_stuffed(normalised) == PERIOD_REGEX.sub(b"..", normalised), normalised


def _aiosmtplib(address: str, encoding: str) -> bytes | None:
    try:
        return quote_address(address).encode(encoding)
    except (ValueError, UnicodeEncodeError):
        return None


def _ours(address: str, envelope: _Envelope) -> bytes | None:
    try:
        return _quoted(address, envelope)
    except (ValueError, UnicodeEncodeError):
        return None


@pytest.mark.parametrize("encoding", ["ascii", "utf-8"])
def test_quoted_addresses_match_aiosmtplib(encoding: str) -> None:
    rng = random.Random(2920)
    envelope = _Envelope("sender@example.org", "rcpt@example.org", [], encoding)
    alphabet = "aZ9.-_+@!#$%&'*/=?^`{|}~ \"()<>,;:[]\\\té"
    cases = [
        "bounces+abcdefgh@pw-bounces.example.org",
        "First.Last@Example.COM",
        "a..b@example.org",
        ".a@example.org",
        "a@example.org.",
        '"quoted local"@example.org',
        "Name <a@example.org>",
        "a@[127.0.0.1]",
        "józef@example.org",
    ]
    cases += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(50_000)]
    for address in cases:
        assert _ours(address, envelope) == _aiosmtplib(address, encoding), address

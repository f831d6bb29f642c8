"""Delivery status notifications: RFC 3464 reports and the few non-standard bounce formats that
are still common (qmail, Exim, a plain text with an SMTP reply in it); pure, stdlib `email` only.

Only a recipient whose Action is `failed` is a bounce: `delayed`, `delivered`, `relayed` and
`expanded` say nothing against the address. A non-standard text is a bounce only when it quotes
a 5xx reply (or names a permanent failure in its own words) and does not read as a delay warning.
"""

from __future__ import annotations

import email.policy
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

from libs.mail.reports import OriginalHeaders, body_text, header, load, original_headers, report_parts
from libs.mail.smtp_outcome import Reply, parse_reply

__all__ = ["BounceReport", "Failure", "parse_bounce", "reply_of"]

_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
# "550 5.1.1 text", "550-5.1.1 text", "550 text": the reply a remote server gave.
_REPLY = re.compile(r"\b([45]\d\d)[ -]((?:[45]\.\d{1,3}\.\d{1,3}\b)?.*)", re.S)
# In free text: a code with its enhanced code anywhere, or a bare code at the start of a line.
_CODE_IN_TEXT = re.compile(r"\b([45]\d\d)[ -]([45]\.\d{1,3}\.\d{1,3}\b[^\r\n]*)")
_CODE_LINE = re.compile(r"(?m)^\s*([45]\d\d)[ -]([^\r\n]*)")
_ADDRESS = re.compile(r"<?([^\s<>@]+@[^\s<>@:]+?)>?:?\s*$")
# Delay warnings look like bounces at first sight; they must never count as one.
_DELAY = re.compile(
    r"has not yet been delivered|not been delivered yet|will (?:continue to )?(?:re)?try|"
    r"delivery (?:has been )?delayed|delayed mail|warning: message",
    re.I,
)
_QMAIL = "hi. this is the qmail-send program"
_EXIM = "this message was created automatically by mail delivery software"


@dataclass(frozen=True, slots=True)
class Failure:
    """One recipient the report says failed for good."""

    recipient: str  # Final-Recipient (or the address a text names); '' when unnamed
    status: str  # RFC 3463 code, '' when the report has none
    diagnostic: str  # the remote reply without its type ("550 5.1.1 User unknown"), or ''
    remote_mta: str  # the server that refused, as the report names it ('' when unnamed)


@dataclass(frozen=True, slots=True)
class BounceReport:
    format: str  # rfc3464 | qmail | exim | text
    failures: tuple[Failure, ...]
    # Recipients the report only says are delayed (or otherwise not failed): ignored.
    others: int
    original: OriginalHeaders | None


def parse_bounce(raw: bytes) -> BounceReport | None:
    """The report in `raw`, or None when it is not recognisably a bounce. Never raises."""
    try:
        msg = load(raw)
        parts = report_parts(msg, "delivery-status")
        if parts is None:
            # RFC 6533's internationalised report (SMTPUTF8 recipients): the same fields in UTF-8.
            parts = report_parts(msg, "global-delivery-status")
        if parts is not None:
            return _rfc3464(parts)
        return _text(msg)
    except Exception:
        # Untrusted bytes: a parser corner we did not foresee is a malformed report, not a crash.
        return None


def _rfc3464(parts: list[Message]) -> BounceReport | None:
    status_part = next((p for p in parts if p.get_content_type() in _STATUS_TYPES), None)
    if status_part is None:
        return None
    fields = _field_blocks(status_part)
    per_message, per_recipient = (fields[0], fields[1:]) if fields else (None, [])
    reporting = header(per_message, "Reporting-MTA") if per_message is not None else ""
    failures: list[Failure] = []
    others = 0
    for block in per_recipient:
        if header(block, "Action").lower() != "failed":
            others += 1
            continue
        failures.append(
            Failure(
                recipient=_typed_value(
                    header(block, "Final-Recipient") or header(block, "Original-Recipient")
                ),
                status=_status(header(block, "Status")),
                diagnostic=_typed_value(header(block, "Diagnostic-Code")),
                remote_mta=_typed_value(header(block, "Remote-MTA") or reporting),
            )
        )
    return BounceReport("rfc3464", tuple(failures), others, original_headers(parts))


_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")


def _field_blocks(part: Message) -> list[Message]:
    """The header blocks of a status part. The email package splits message/delivery-status into
    blocks itself; any other message/* type (the global one) comes back as one message whose body
    holds the remaining blocks, which are parsed here."""
    payload = part.get_payload()
    found: list[Message] = []
    texts: list[str] = []
    if isinstance(payload, list):
        for block in payload:
            if not isinstance(block, Message):
                continue
            found.append(block)
            if part.get_content_type() != "message/delivery-status" and not block.is_multipart():
                # decode=True gives the raw bytes; the str form has 8-bit UTF-8 replaced.
                rest = block.get_payload(decode=True)
                if isinstance(rest, bytes):
                    texts.append(rest.decode("utf-8", "replace"))
    elif isinstance(payload, str):
        texts.append(payload)
    for text in texts:
        for chunk in re.split(r"\r?\n[ \t]*\r?\n", text.strip()):
            if chunk.strip():
                found.append(HeaderParser(policy=email.policy.compat32).parsestr(chunk.strip() + "\n"))
    return found


def _text(msg: Message) -> BounceReport | None:
    text = _first_text(msg)
    if not text:
        return None
    lowered = text.lower()
    original = original_headers([p for p in msg.walk() if not p.is_multipart()])
    if _QMAIL in lowered:
        return _qmail(text, original)
    if _EXIM in lowered:
        if _DELAY.search(text):
            return BounceReport("exim", (), 1, original)
        return _exim(text, original)
    if _DELAY.search(text):
        return BounceReport("text", (), 1, original)
    match = _CODE_IN_TEXT.search(text) or _CODE_LINE.search(text)
    if match is None or not match.group(1).startswith("5"):
        return None
    diagnostic = f"{match.group(1)} {match.group(2).strip()}"
    return BounceReport(
        "text", (Failure(_address_near(text, match.start()), "", diagnostic, ""),), 0, original
    )


def _qmail(text: str, original: OriginalHeaders | None) -> BounceReport:
    # Each failed recipient is a paragraph "<address>:" then the remote's words; qmail writes
    # only permanent failures (and queue expiry) into this message.
    body = text.split("--- Below this line is a copy of the message.", 1)[0]
    failures: list[Failure] = []
    for paragraph in re.split(r"\n\s*\n", body):
        lines = paragraph.strip().splitlines()
        if not lines:
            continue
        first = _ADDRESS.fullmatch(lines[0].strip())
        if first is None or not lines[0].strip().startswith("<"):
            continue
        rest = " ".join(line.strip() for line in lines[1:])
        code = _REPLY.search(rest)
        diagnostic = f"{code.group(1)} {code.group(2).strip()}" if code else rest
        failures.append(Failure(first.group(1), "", diagnostic[:512], ""))
    return BounceReport("qmail", tuple(failures), 0, original)


def _exim(text: str, original: OriginalHeaders | None) -> BounceReport:
    # "The following address(es) failed:" then each address indented by two, its reasons by four.
    _, _, tail = text.partition("failed:")
    failures: list[Failure] = []
    address = ""
    reasons: list[str] = []
    for line in tail.splitlines():
        if line.startswith("------"):
            break
        stripped = line.strip()
        if not stripped:
            continue
        if line.startswith("  ") and not line.startswith("    ") and "@" in stripped:
            if address:
                failures.append(_exim_failure(address, reasons))
            address, reasons = stripped.split()[0].strip("<>:"), []
        elif address:
            reasons.append(stripped)
    if address:
        failures.append(_exim_failure(address, reasons))
    return BounceReport("exim", tuple(failures), 0, original)


def _exim_failure(address: str, reasons: list[str]) -> Failure:
    joined = " ".join(reasons)
    code = _REPLY.search(joined)
    host = re.search(r"host (\S+)", joined)
    diagnostic = f"{code.group(1)} {code.group(2).strip()}" if code else joined
    return Failure(address, "", diagnostic[:512], host.group(1) if host else "")


def _first_text(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            return body_text(part)
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            break
    return ""


def _address_near(text: str, pos: int) -> str:
    found = re.findall(
        r"<?([A-Za-z0-9._%+'=-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})>?", text[max(0, pos - 400) : pos + 400]
    )
    return found[0] if found else ""


def _typed_value(value: str) -> str:
    """'rfc822; a@b' → 'a@b', 'smtp; 550 ...' → '550 ...', 'dns; mx.example' → 'mx.example'."""
    kind, sep, rest = value.partition(";")
    return (rest if sep and " " not in kind.strip() else value).strip()


def _status(value: str) -> str:
    first = value.split()[0] if value.split() else ""
    return first if _STATUS.match(first) else ""


def reply_of(failure: Failure) -> Reply:
    """The SMTP reply a failure reports, for smtp_outcome.classify: the diagnostic's code and
    text when it quotes one, else one made from the status (5.x.x → 550, 4.x.x → 450)."""
    match = _REPLY.match(failure.diagnostic.strip())
    if match:
        reply = parse_reply(int(match.group(1)), match.group(2))
        if not reply.enhanced and failure.status:
            return Reply(reply.code, failure.status, reply.text)
        return reply
    status = failure.status
    code = 550 if status.startswith("5") else 450 if status.startswith("4") else 550
    text = " ".join(f"{status} {failure.diagnostic}".split())[:512]
    return Reply(code, status, text)

"""Address checks and IDNA conversion; pure, no I/O."""

from __future__ import annotations

import functools
import re
import unicodedata

import idna
from email_validator import EmailNotValidError, ValidatedEmail, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, DOT_ATOM_TEXT, EMAIL_MAX_LENGTH

__all__ = ["AddressError", "has_unsafe_chars", "normalize_address", "to_ascii_address"]

MAX_ADDRESS = 254
MAX_LOCAL = 64


class AddressError(ValueError):
    pass


# The only control, format or separator characters ASCII has (categories Cc; no Cf, Zl or Zp).
_ASCII_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def has_unsafe_chars(value: str) -> str | None:
    """Describe the first control, format (zero-width, bidi) or line-separator character, if any."""
    if value.isascii():
        # Every subject, name and address passes here once per message: one C scan instead of a
        # category lookup per character.
        found = _ASCII_UNSAFE.search(value)
        return None if found is None else _unsafe(found.group())
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            return _unsafe(ch)
    return None


def _unsafe(ch: str) -> str:
    if ch in "\r\n":
        return "must not contain CR or LF"
    if ch == "\0":
        return "must not contain NUL"
    return f"must not contain control or invisible character U+{ord(ch):04X}"


# Pure and costly (~0.3 ms); a batch repeats its From address in every message and senders repeat
# theirs across calls. Refusals raise, so only valid addresses are remembered.
@functools.lru_cache(maxsize=4096)
def normalize_address(address: str, *, utf8_local: bool = False) -> str:
    """Validate an addr-spec and return its normalised form (domain lowercased, Unicode NFC).

    `utf8_local` admits a non-ASCII local part (RFC 6531/6532): delivering it needs SMTPUTF8 from
    the receiving server and raw UTF-8 in the header that carries it."""
    if not address:
        raise AddressError("address is required")
    unsafe = has_unsafe_chars(address)
    if unsafe:
        raise AddressError(f"address {unsafe}")
    normalized = _plain(address)
    if normalized is None:
        try:
            result = _validate(address, utf8_local=utf8_local)
        except EmailNotValidError as exc:
            local, _, _ = address.rpartition("@")
            if not utf8_local and not local.isascii():
                raise AddressError("the part before the @-sign must be ASCII here") from None
            raise AddressError(str(exc)) from None
        normalized = str(result.normalized)
    local = normalized.rpartition("@")[0]
    if len(local.encode()) > MAX_LOCAL:
        raise AddressError(f"local part is longer than {MAX_LOCAL} octets")
    ascii_form = to_ascii_address(normalized)
    if len(ascii_form.encode()) > MAX_ADDRESS:
        raise AddressError(f"address is longer than {MAX_ADDRESS} octets")
    return normalized


def _validate(address: str, *, utf8_local: bool) -> ValidatedEmail:
    return validate_email(
        address,
        check_deliverability=False,
        allow_quoted_local=False,
        allow_domain_literal=False,
        allow_display_name=False,
        allow_smtputf8=utf8_local,
    )


def _plain(address: str) -> str | None:
    """validate_email's normalised form of a plain address, or None to ask validate_email itself.

    Most of its cost is the domain (UTS 46 checks per character), and recipients are unique
    while their domains repeat. A local part that is plain dot-atom ASCII, not one of the
    mailbox names validate_email lower-cases, is valid and kept as it is whatever the options;
    the domain's result does not depend on the local part; the address then passes when the
    domain does and the three lengths validate_email checks fit. Anything else, and every
    refusal (so its message), goes through validate_email."""
    local, at, domain = address.partition("@")
    if not at or not DOT_ATOM_TEXT.match(local) or local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:
        return None
    forms = _domain_forms(domain)
    if forms is None:
        return None
    normalized = f"{local}@{forms[0]}"
    longest = max(len(address.encode()), len(normalized.encode()), len(local) + 1 + len(forms[1].encode()))
    return normalized if longest <= EMAIL_MAX_LENGTH else None


@functools.lru_cache(maxsize=4096)
def _domain_forms(domain: str) -> tuple[str, str] | None:
    """(normalised, IDNA ASCII) forms of `domain` when validate_email accepts it, else None."""
    try:
        result = _validate(f"a@{domain}", utf8_local=False)
    except EmailNotValidError:
        return None
    return str(result.domain), str(result.ascii_domain)


def to_ascii_address(address: str) -> str:
    """The address with its domain as IDNA A-labels (the local part is left as is)."""
    local, _, domain = address.rpartition("@")
    if domain.isascii():
        return f"{local}@{domain.lower()}"
    try:
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        ascii_domain = domain
    return f"{local}@{ascii_domain.lower()}"

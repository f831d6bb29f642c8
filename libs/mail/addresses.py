"""Address checks and IDNA conversion; pure, no I/O."""

from __future__ import annotations

import functools
import unicodedata

import idna
from email_validator import EmailNotValidError, validate_email

__all__ = ["AddressError", "has_unsafe_chars", "normalize_address", "to_ascii_address"]

MAX_ADDRESS = 254
MAX_LOCAL = 64


class AddressError(ValueError):
    pass


def has_unsafe_chars(value: str) -> str | None:
    """Describe the first control, format (zero-width, bidi) or line-separator character, if any."""
    for ch in value:
        category = unicodedata.category(ch)
        if category in ("Cc", "Cf", "Zl", "Zp"):
            if ch in "\r\n":
                return "must not contain CR or LF"
            if ch == "\0":
                return "must not contain NUL"
            return f"must not contain control or invisible character U+{ord(ch):04X}"
    return None


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
    try:
        result = validate_email(
            address,
            check_deliverability=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            allow_smtputf8=utf8_local,
        )
    except EmailNotValidError as exc:
        local, _, _ = address.rpartition("@")
        if not utf8_local and not local.isascii():
            raise AddressError("the part before the @-sign must be ASCII here") from None
        raise AddressError(str(exc)) from None
    local = result.local_part
    if len(local.encode()) > MAX_LOCAL:
        raise AddressError(f"local part is longer than {MAX_LOCAL} octets")
    ascii_form = to_ascii_address(result.normalized)
    if len(ascii_form.encode()) > MAX_ADDRESS:
        raise AddressError(f"address is longer than {MAX_ADDRESS} octets")
    return str(result.normalized)


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

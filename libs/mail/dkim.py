"""DKIM signatures (RFC 6376) in rsa-sha256 and ed25519-sha256 (RFC 8463), without I/O.

Signing goes through `cryptography` (OpenSSL): dkimpy's pure-Python RSA costs ~20x more per
message, and mta_worker signs every recipient's copy at every attempt. Canonicalisation is
relaxed/relaxed (survives the re-folding and whitespace changes relays make), there is no l=
(appended content would still verify), and the headers an attacker would most like to add a
second copy of are oversigned, so adding one breaks the signature.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

__all__ = [
    "OVERSIGNED_HEADERS",
    "SIGNED_HEADERS",
    "MessageSigner",
    "SigningKey",
    "body_hash",
    "header_hash_input",
    "sign",
    "sign_hash_input",
    "wire_form",
]

# RFC 6376 §5.4.1's recommended set, plus List-Unsubscribe-Post (RFC 8058 requires a signature
# covering it), Feedback-ID (Gmail's feedback loop) and X-Postwire-Feedback-Id (the token that
# matches a complaint to its recipient, so a forged one cannot ride on our signature). Trace and transport headers (Received,
# Return-Path) are left out: relays add and rewrite them.
SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "to",
    "cc",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-id",
    "content-description",
    "in-reply-to",
    "references",
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
    "feedback-id",
    "x-postwire-feedback-id",
)

# Listed in h= once more than they occur (once when absent): the extra entry signs the "null"
# instance, so a copy added later (a second From shown by some clients, a forged unsubscribe
# link) fails verification instead of riding on our signature.
OVERSIGNED_HEADERS: frozenset[str] = frozenset(
    {"from", "subject", "date", "to", "message-id", "list-unsubscribe", "list-unsubscribe-post"}
)

_SIGNED_NAMES = {name.encode("ascii"): name for name in SIGNED_HEADERS}
# The extra (null) entries of h=. Listed last, each names no instance left, whatever precedes it.
_OVERSIGNED_ORDER = tuple(name for name in SIGNED_HEADERS if name in OVERSIGNED_HEADERS)

# RFC 5322 §2.1.1's SHOULD. We fold (b= included) rather than leave it to an MTA: dkimpy does the
# same because Yahoo and live.com mishandled signatures that MTAs had re-folded.
_MAX_LINE = 78

_FIELD_SPLIT = re.compile(rb"\r\n(?![ \t])")
_SPACE_RUN = re.compile(rb"  +")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_PKCS1 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key of a sending domain; the algorithm follows the key type."""

    domain: str  # d=, lowercase A-label
    selector: str  # s=
    private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = field(repr=False)

    @property
    def algorithm(self) -> str:
        return "rsa-sha256" if isinstance(self.private_key, rsa.RSAPrivateKey) else "ed25519-sha256"


def _collapse_wsp(data: bytes) -> bytes:
    # Tabs first, then only runs of two or more spaces: a pattern that matched every single
    # space would cost ~3x more on ordinary text, and this runs on every copy of every message.
    data = data.replace(b"\t", b" ")
    return _SPACE_RUN.sub(b" ", data) if b"  " in data else data


def body_hash(body: bytes) -> str:
    """bh= of a CRLF body under relaxed canonicalisation (RFC 6376 §3.4.4)."""
    canonical = _collapse_wsp(body).replace(b" \r\n", b"\r\n").rstrip(b" \r\n")
    if canonical:
        canonical += b"\r\n"
    return base64.b64encode(hashlib.sha256(canonical).digest()).decode("ascii")


def _relaxed(field_bytes: bytes) -> bytes:
    name, _, value = field_bytes.partition(b":")
    # In a field every CRLF is a fold (followed by WSP), so unfolding is deleting CRLF.
    value = _collapse_wsp(value.replace(b"\r\n", b"")).strip(b" ")
    return name.rstrip(b" \t").lower() + b":" + value + b"\r\n"


def _fields_by_name(header_block: bytes) -> dict[bytes, list[bytes]]:
    fields: dict[bytes, list[bytes]] = {}
    for raw in _FIELD_SPLIT.split(header_block):
        name, colon, _ = raw.partition(b":")
        if colon:
            fields.setdefault(name.strip(b" \t").lower(), []).append(raw)
    return fields


def _signed_fields(fields: dict[bytes, list[bytes]], signed: Sequence[str]) -> bytes:
    used: dict[str, int] = {}
    parts = []
    for name in signed:
        instances = fields.get(name.encode("ascii"), ())
        taken = used.get(name, 0)
        if taken < len(instances):
            parts.append(_relaxed(instances[-1 - taken]))
        used[name] = taken + 1
    return b"".join(parts)


def header_hash_input(header_block: bytes, signed: Sequence[str], signature_field: bytes) -> bytes:
    """What the signature covers (RFC 6376 §3.7): the header fields named in h= (each repeat of a
    name takes the next instance up from the bottom, none once they run out), relaxed, then the
    DKIM-Signature field itself with an empty b= and no trailing CRLF."""
    fields = _fields_by_name(header_block)
    return _signed_fields(fields, signed) + _relaxed(signature_field)[:-2]


def sign_hash_input(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, data: bytes) -> bytes:
    """The raw b= signature of a header hash input."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, _PKCS1, _SHA256)
    # RFC 8463 §3: Ed25519 signs the SHA-256 digest of the input, not the input itself. Signing
    # the raw input round-trips with a self-made verifier and fails at Gmail.
    return key.sign(hashlib.sha256(data).digest())


def _fold(tokens: Sequence[str], joiner: str, start: int) -> str:
    """Tokens joined by `joiner`, a fold (CRLF SP) instead where the line would pass _MAX_LINE. A token never splits, so an absurdly long d= can still pass it (the hard limit,
    998, is far off)."""
    out = [tokens[0]]
    used = start + len(tokens[0])
    for token in tokens[1:]:
        if used + len(joiner) + len(token) > _MAX_LINE:
            out.append("\r\n ")
            used = 1
        else:
            out.append(joiner)
            used += len(joiner)
        out.append(token)
        used += len(token)
    return "".join(out)


@functools.lru_cache(maxsize=256)
def _h_tag(h: tuple[str, ...]) -> str:
    """h= on lines of its own (so one folding serves every key), folded after a ':' (FWS is
    allowed around it). Messages of one template share their header names, so the folding is
    kept rather than redone for every copy."""
    names = [f"{name}:" for name in h[:-1]] + [f"{h[-1]};"]
    names[0] = "h=" + names[0]
    return _fold(names, "", 1)


def _signature_field(key: SigningKey, h_tag: str, bh: str, timestamp: int) -> str:
    """The DKIM-Signature field up to and including an empty b=, folded, without a final CRLF."""
    head = [f"v=1; a={key.algorithm};", "c=relaxed/relaxed;", f"d={key.domain};", f"s={key.selector};"]
    head.append(f"t={timestamp};")
    return (
        "DKIM-Signature: " + _fold(head, " ", len("DKIM-Signature: ")) + f"\r\n {h_tag}\r\n bh={bh};\r\n b="
    )


def _fold_b(unsigned: str, b64: str) -> str:
    # b= starts a line of its own, so the whole value folds at fixed widths.
    room = _MAX_LINE - len(" b=")
    lines = [b64[:room]] + [b64[i : i + _MAX_LINE - 1] for i in range(room, len(b64), _MAX_LINE - 1)]
    return unsigned + "\r\n ".join(lines)


def _h_and_signed(fields: dict[bytes, list[bytes]]) -> tuple[list[str], bytes]:
    """h= (the SIGNED_HEADERS present, in message order, then one more of each oversigned name)
    and the relaxed fields it covers: once per message, since every signature shares them."""
    names: list[str] = []
    parts: list[bytes] = []
    for key, instances in fields.items():
        name = _SIGNED_NAMES.get(key)
        if name is not None:
            names.extend([name] * len(instances))
            parts.extend([_relaxed(instance) for instance in reversed(instances)])
    names.extend(_OVERSIGNED_ORDER)
    return names, b"".join(parts)


def wire_form(data: bytes) -> bytes:
    """Bare CR or LF as CRLF, as SMTP clients send them (aiosmtplib's
    normalize_message_line_endings gives the same bytes), so the signature covers the bytes on
    the wire; data already in that form is returned as is, without a regular expression pass."""
    # (bytes.count is ~4x slower here than one replace and two memchr scans.)
    without_crlf = data.replace(b"\r\n", b"")
    if b"\n" in without_crlf or b"\r" in without_crlf:
        data = _LINE_END.sub(b"\r\n", data)
    return data


class MessageSigner:
    """Signs the copies of one message that differ only in header fields put on top of it (each
    recipient's return-path token): the body hash and the message's own header fields are worked
    out once, and each copy costs only its own fields and the signing calls."""

    def __init__(self, message: bytes, keys: Sequence[SigningKey]) -> None:
        self._keys = sorted(keys, key=lambda k: not isinstance(k.private_key, rsa.RSAPrivateKey))
        self.message = message
        if not keys:
            return  # nothing to sign: the copies are the fields on top and the message as given
        message = wire_form(message)
        # The client ends DATA with CRLF "." CRLF, adding a CRLF the message lacks; without it
        # here, verifiers would disagree on whether the last line's trailing whitespace counts.
        if not message.endswith(b"\r\n"):
            message += b"\r\n"
        self.message = message
        header_block, sep, body = message.partition(b"\r\n\r\n")
        if not sep and header_block.endswith(b"\r\n"):
            header_block = header_block[:-2]
        self._bh = body_hash(body)
        self._fields = _fields_by_name(header_block)

    def sign(self, top: bytes = b"", *, timestamp: int | None = None) -> bytes:
        """`top` (whole header fields, CRLF-terminated) above the message, with one
        DKIM-Signature per key above that, RSA first."""
        if not self._keys:
            return top + self.message
        fields = self._fields
        if top:
            top = wire_form(top)
            # Fields on top come first in the message: their names first in h=, and each of
            # their instances above the message's own (h= takes instances from the bottom up).
            fields = _fields_by_name(top)
            for name, instances in self._fields.items():
                fields[name] = fields.get(name, []) + instances
        h, signed = _h_and_signed(fields)
        h_tag = _h_tag(tuple(h))
        t = int(time.time()) if timestamp is None else timestamp
        signatures = []
        for key in self._keys:
            unsigned = _signature_field(key, h_tag, self._bh, t)
            data = signed + _relaxed(unsigned.encode("ascii"))[:-2]
            b64 = base64.b64encode(sign_hash_input(key.private_key, data)).decode("ascii")
            signatures.append(_fold_b(unsigned, b64).encode("ascii") + b"\r\n")
        return b"".join(signatures) + top + self.message


def sign(message: bytes, keys: Sequence[SigningKey], *, timestamp: int | None = None) -> bytes:
    """The message (CRLF line endings, as the router builds it) with one DKIM-Signature header per
    key prepended, RSA first. Both signatures share one body hash. Line endings are returned as
    they go on the wire: bare CR or LF as CRLF, and a final CRLF added if missing."""
    if not keys:
        return message
    return MessageSigner(message, keys).sign(timestamp=timestamp)

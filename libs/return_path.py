"""Per-recipient return paths: `bounces+<token>@<label>.<from domain>` (or `@<host>`), where the
token names the message and recipient, so an asynchronous bounce is matched without guessing.
Pure: no I/O.

The token is lowercase base32 without padding of 30 bytes:

    version (1) | key id (1) | message id (16, a UUID) | recipient index (2, big-endian) | MAC (10)

The MAC is HMAC-SHA256 over the first 20 bytes, truncated to 80 bits, under a key derived from a
POSTWIRE_TOKEN_KEYS key (never the AES key itself). 30 bytes are exactly 48 base32 characters, so
the local part `bounces+<token>` is 56 characters, inside RFC 5321's 64. The token is signed, not
encrypted: a message id is no secret to the receiver of the message, and sealing would not fit.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import idna

from libs.config import ConfigError, env_str
from libs.token_keys import KeyRing, TokenInvalid

__all__ = [
    "FEEDBACK_ID_HEADER",
    "LOCAL_PREFIX",
    "ReturnPathConfig",
    "ReturnPathTokens",
    "TokenInvalid",
    "envelope_from",
    "feedback_headers",
    "token_of",
]

LOCAL_PREFIX = "bounces+"
DEFAULT_HOST = "bounces.postwire.localhost"
DEFAULT_LABEL = "pw-bounces"

_VERSION = 1
_MAC_BYTES = 10
_SIGNED_BYTES = 1 + 1 + 16 + 2
_TOKEN_BYTES = _SIGNED_BYTES + _MAC_BYTES
_TOKEN_CHARS = _TOKEN_BYTES * 8 // 5
_MAX_INDEX = 0xFFFF
# A distinct label per use, so a key shared with page tokens never yields the same MAC key twice.
_DERIVE_LABEL = b"postwire return-path token v1"
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _short_kid(kid: str) -> int:
    # One byte names the key; two kids may collide, so opening tries every key with that byte.
    return hashlib.sha256(b"postwire return-path kid\x00" + kid.encode()).digest()[0]


def _host_problem(host: str) -> str | None:
    if len(host) > 253:
        return "must be at most 253 characters"
    if not all(_LABEL.fullmatch(label) for label in host.split(".")):
        return "must be a host name of letters, digits and hyphens (A-labels for IDN)"
    return None


@dataclass(frozen=True, slots=True)
class ReturnPathConfig:
    # The shared bounce host: the envelope domain for unverified From domains, and the target of
    # the `<label>.<domain>` CNAME that DomainService asks verified domains to publish.
    host: str
    # The subdomain label under a verified From domain; SPF then aligns with the From domain in
    # DMARC's relaxed mode.
    label: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ReturnPathConfig:
        host = env_str(env, "POSTWIRE_RETURN_PATH_HOST", DEFAULT_HOST).lower().rstrip(".")
        label = env_str(env, "POSTWIRE_RETURN_PATH_LABEL", DEFAULT_LABEL).lower()
        problem = _host_problem(host)
        if problem:
            raise ConfigError(f"POSTWIRE_RETURN_PATH_HOST: {problem}, got {host!r}")
        if not _LABEL.fullmatch(label):
            raise ConfigError(
                f"POSTWIRE_RETURN_PATH_LABEL: expected one DNS label (letters, digits, inner hyphens), got {label!r}"
            )
        return cls(host=host, label=label)


class ReturnPathTokens:
    """Mints with the ring's first key; opens with any key on the ring, so rotation keeps
    tokens already out in the world (bounces arrive days later) working."""

    __slots__ = ("_by_short", "_mint_key", "_mint_kid")

    def __init__(self, keys: KeyRing) -> None:
        derived = [
            (_short_kid(kid), hmac.new(key, _DERIVE_LABEL, hashlib.sha256).digest()) for kid, key in keys.keys
        ]
        self._mint_kid, self._mint_key = derived[0]
        by_short: dict[int, list[bytes]] = {}
        for short, mac_key in derived:
            by_short.setdefault(short, []).append(mac_key)
        self._by_short = {short: tuple(found) for short, found in by_short.items()}

    def __repr__(self) -> str:
        return "ReturnPathTokens()"

    def mint(self, message_id: str, recipient_index: int) -> str:
        """The token for one recipient of one message; ValueError for a non-UUID id or an index
        outside 0..65535."""
        if not 0 <= recipient_index <= _MAX_INDEX:
            raise ValueError(f"recipient_index must be within 0..{_MAX_INDEX}, got {recipient_index}")
        signed = (
            bytes((_VERSION, self._mint_kid))
            + uuid.UUID(message_id).bytes
            + recipient_index.to_bytes(2, "big")
        )
        raw = signed + _mac(self._mint_key, signed)
        return base64.b32encode(raw).decode("ascii").lower()

    def open(self, token: str) -> tuple[str, int]:
        """(message id, recipient index); TokenInvalid for anything this ring did not mint."""
        if len(token) != _TOKEN_CHARS or not token.isascii():
            raise TokenInvalid
        try:
            raw = base64.b32decode(token, casefold=True)
        except (binascii.Error, ValueError):
            raise TokenInvalid from None
        signed, mac = raw[:_SIGNED_BYTES], raw[_SIGNED_BYTES:]
        if signed[0] != _VERSION:
            raise TokenInvalid
        for mac_key in self._by_short.get(signed[1], ()):
            if hmac.compare_digest(_mac(mac_key, signed), mac):
                return str(uuid.UUID(bytes=signed[2:18])), int.from_bytes(signed[18:20], "big")
        raise TokenInvalid


def _mac(key: bytes, signed: bytes) -> bytes:
    return hmac.new(key, signed, hashlib.sha256).digest()[:_MAC_BYTES]


def envelope_from(token: str, from_domain: str, *, verified: bool, config: ReturnPathConfig) -> str:
    """The MAIL FROM address: under the From domain's return-path label when the tenant verified
    that domain (its CNAME points at the bounce host), else directly at the bounce host."""
    if not verified:
        return f"{LOCAL_PREFIX}{token}@{config.host}"
    domain = from_domain.lower().rstrip(".")
    if not domain.isascii():
        # The envelope stays ASCII, so a return path never by itself needs SMTPUTF8.
        domain = idna.encode(domain, uts46=True).decode("ascii")
    return f"{LOCAL_PREFIX}{token}@{config.label}.{domain}"


def token_of(address: str) -> str:
    """The token of a return-path address (any case); TokenInvalid if it is not one."""
    local, at, _ = address.rpartition("@")
    if not at or local[: len(LOCAL_PREFIX)].lower() != LOCAL_PREFIX:
        raise TokenInvalid
    return local[len(LOCAL_PREFIX) :]


FEEDBACK_ID_HEADER = "X-Postwire-Feedback-Id"


def feedback_headers(token: str, *, tenant_id: str, stream: str) -> bytes:
    """Headers every recipient's copy carries: the recipient's token (the same as in its return
    path), for complaints whose report keeps only the original's headers, and Gmail's
    `Feedback-ID` (`<stream>:<tenant>:postwire`, the last field the sender id)."""
    return f"{FEEDBACK_ID_HEADER}: {token}\r\nFeedback-ID: {stream}:{tenant_id}:postwire\r\n".encode("ascii")

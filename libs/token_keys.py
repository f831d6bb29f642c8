"""One key ring for every token Postwire mints (page tokens first; return-path, tracking and
unsubscribe tokens later): AES-256-GCM, the first key seals and every key opens, so a key can be
rotated in without breaking tokens already handed out. Pure apart from os.urandom for nonces.

POSTWIRE_TOKEN_KEYS is `kid:base64key,kid2:base64key`; each key is 32 random bytes.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from libs.config import ConfigError

__all__ = ["DEV_TOKEN_KEYS", "ENV_VAR", "KeyRing", "TokenInvalid", "generate_token_keys"]

ENV_VAR = "POSTWIRE_TOKEN_KEYS"
# Used when POSTWIRE_TOKEN_KEYS is unset: anyone can read it here, so a start-up check refuses it
# outside POSTWIRE_ENV=dev. Keep the name and value exactly as they are.
DEV_TOKEN_KEYS = "dev:ZGV2LW9ubHktdG9rZW4ta2V5LW5ldmVyLWluLXByb2Q="

_KID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_KEY_BYTES = 32
_NONCE_BYTES = 12


class TokenInvalid(Exception):
    """A token did not open. Deliberately carries no reason: callers answer every failure alike."""


def _b64decode(text: str) -> bytes:
    # Accept both alphabets and missing padding: keys are pasted from openssl, tokens arrive unpadded.
    padded = text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4)
    return base64.b64decode(padded, validate=True)


@dataclass(frozen=True, slots=True)
class KeyRing:
    # (kid, key) in order; the first seals.
    keys: tuple[tuple[str, bytes], ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a key ring needs at least one key")

    def __repr__(self) -> str:
        # A config object may end up in a log line; the keys must not.
        return f"KeyRing(kids={[kid for kid, _ in self.keys]})"

    @classmethod
    def parse(cls, raw: str, *, name: str = ENV_VAR) -> KeyRing:
        """Parse `kid:base64key,…`; anything malformed is a ConfigError naming `name`
        (never echoing the value: it is a secret)."""
        keys: list[tuple[str, bytes]] = []
        for n, item in enumerate(part.strip() for part in raw.split(",")):
            kid, sep, encoded = item.partition(":")
            if not sep or not _KID.fullmatch(kid):
                raise ConfigError(
                    f"{name}: entry {n + 1} must be kid:base64key with a kid of 1-32 letters, digits, - or _"
                )
            if any(kid == seen for seen, _ in keys):
                raise ConfigError(f"{name}: kid {kid!r} appears twice")
            try:
                key = _b64decode(encoded.strip())
            except (ValueError, binascii.Error):
                raise ConfigError(f"{name}: the key of kid {kid!r} is not base64") from None
            if len(key) != _KEY_BYTES:
                raise ConfigError(
                    f"{name}: the key of kid {kid!r} must be {_KEY_BYTES} bytes, got {len(key)}"
                )
            keys.append((kid, key))
        return cls(tuple(keys))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KeyRing:
        return cls.parse(env.get(ENV_VAR, "").strip() or DEV_TOKEN_KEYS)

    def seal(self, purpose: str, payload: bytes, /) -> str:
        """An url-safe token `kid.nonce+ciphertext` that only `open(purpose, …)` accepts."""
        kid, key = self.keys[0]
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, payload, _associated(purpose, kid))
        return f"{kid}.{base64.urlsafe_b64encode(nonce + sealed).decode().rstrip('=')}"

    def open(self, purpose: str, token: str, /) -> bytes:
        """The payload; TokenInvalid for any token not sealed by a key on the ring for `purpose`."""
        kid, sep, body = token.partition(".")
        key = dict(self.keys).get(kid) if sep else None
        if key is None:
            raise TokenInvalid
        try:
            raw = _b64decode(body)
        except (ValueError, binascii.Error):
            raise TokenInvalid from None
        if len(raw) < _NONCE_BYTES + 16:
            raise TokenInvalid
        try:
            return AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _associated(purpose, kid))
        except InvalidTag:
            raise TokenInvalid from None


def _associated(purpose: str, kid: str) -> bytes:
    # The purpose is authenticated, so a page token can never be opened as another kind of token.
    return f"postwire-token\x00{purpose}\x00{kid}".encode()


def generate_token_keys(kid: str = "k1") -> str:
    """A fresh one-key POSTWIRE_TOKEN_KEYS value."""
    return f"{kid}:{base64.b64encode(secrets.token_bytes(_KEY_BYTES)).decode()}"

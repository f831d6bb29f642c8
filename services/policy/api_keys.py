"""API key format and hashing; pure.

A key is `pw_<prefix>_<secret>`: the prefix identifies it in logs and is stored in clear, the
secret is 256 random bits and only an HMAC of the whole key is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = [
    "KNOWN_SCOPES",
    "NewKey",
    "generate_key",
    "hash_key",
    "key_prefix",
    "scope_violations",
]

KNOWN_SCOPES = (
    "send",
    "messages:read",
    "templates:read",
    "templates:write",
    "events:read",
    "suppressions:read",
    "suppressions:write",
    "domains:read",
    "domains:write",
    "webhooks:read",
    "webhooks:write",
)


def scope_violations(scopes: list[str], field: str = "scopes") -> list[tuple[str, str]]:
    if not scopes:
        return [(field, f"at least one scope is required; known scopes: {', '.join(KNOWN_SCOPES)}")]
    violations = [
        (f"{field}[{i}]", f"unknown scope '{scope}'; known scopes: {', '.join(KNOWN_SCOPES)}")
        for i, scope in enumerate(scopes)
        if scope not in KNOWN_SCOPES
    ]
    if len(set(scopes)) != len(scopes):
        violations.append((field, "a scope is listed twice"))
    return violations


@dataclass(frozen=True, slots=True)
class NewKey:
    key: str
    prefix: str


def generate_key() -> NewKey:
    prefix = "pw_" + secrets.token_hex(4)
    return NewKey(key=f"{prefix}_{secrets.token_urlsafe(32)}", prefix=prefix)


def key_prefix(key: str) -> str:
    """The loggable part of a presented key, or '' if it is not shaped like one."""
    parts = key.split("_")
    return f"pw_{parts[1]}" if len(parts) >= 3 and parts[0] == "pw" and len(parts[1]) == 8 else ""


def hash_key(key: str, pepper: bytes) -> bytes:
    return hmac.new(pepper, key.encode(), hashlib.sha256).digest()

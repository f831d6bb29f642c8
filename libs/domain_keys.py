"""Sending domains' DKIM private keys at rest: how they are sealed, and the one reader that
opens them for signing.

Policy seals the keys it makes (DomainService); mta_worker reads them here to sign. Both hold
the same POSTWIRE_SECRET_KEY, and no other service needs it.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Mapping

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from libs.dev_switch import DEV_SECRET_KEY
from libs.mail.dkim import SigningKey

__all__ = ["DomainKeyReader", "KeyUnreadable", "Sealer", "secret_key"]


def secret_key(env: Mapping[str, str]) -> str:
    """POSTWIRE_SECRET_KEY, or the dev default (which the dev switch refuses outside dev)."""
    return env.get("POSTWIRE_SECRET_KEY", "").strip() or DEV_SECRET_KEY


class Sealer:
    """AES-256-GCM for private keys at rest. The key is derived from the deployment's secret, so
    any string works as POSTWIRE_SECRET_KEY; the domain id is bound in as associated data."""

    def __init__(self, secret: str) -> None:
        self._aead = AESGCM(hashlib.sha256(b"postwire-domain-keys:" + secret.encode()).digest())

    def seal(self, plaintext: bytes, domain_id: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, domain_id.encode())

    def open(self, sealed: bytes, domain_id: str) -> bytes:
        return self._aead.decrypt(sealed[:12], sealed[12:], domain_id.encode())


class KeyUnreadable(Exception):
    """A stored key did not open: POSTWIRE_SECRET_KEY differs from the one that sealed it. An
    operator error, not a property of the message; the message names the domain, never a key."""

    def __init__(self, domain: str) -> None:
        super().__init__(
            f"DKIM keys of {domain} cannot be opened with this POSTWIRE_SECRET_KEY "
            "(it must be the one policy used when the domain was created)"
        )
        self.domain = domain


_SELECT = (
    "SELECT id, rsa_selector, rsa_private, ed25519_selector, ed25519_private FROM domains"
    " WHERE tenant_id = $1 AND name = $2 AND verified"
)


class DomainKeyReader:
    """The signing keys of a tenant's verified domain, cached: answers per (tenant, domain) for
    `ttl` seconds (so a newly verified or deleted domain is seen within it), and opened keys by
    (domain id, selector) for as long as the process lives, since loading an RSA PEM costs more
    than signing with it. A hit costs one dict lookup."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        sealer: Sealer,
        *,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._sealer = sealer
        self._ttl = ttl
        self._clock = clock
        self._answers: dict[tuple[str, str], tuple[float, tuple[SigningKey, ...]]] = {}
        self._opened: dict[tuple[str, str], SigningKey] = {}

    async def keys_for(self, tenant_id: str, domain: str) -> tuple[SigningKey, ...]:
        """RSA then Ed25519 when `domain` (lowercase A-label) is a verified domain of the tenant,
        else (). A PostgreSQL failure propagates, so the caller can defer rather than send
        unsigned; KeyUnreadable likewise."""
        now = self._clock()
        hit = self._answers.get((tenant_id, domain))
        if hit is not None and hit[0] > now:
            return hit[1]
        keys = await self._load(tenant_id, domain)
        if len(self._answers) >= 10_000:
            # Bounded without bookkeeping: a refill costs one query per live domain.
            self._answers.clear()
        self._answers[(tenant_id, domain)] = (now + self._ttl, keys)
        return keys

    async def _load(self, tenant_id: str, domain: str) -> tuple[SigningKey, ...]:
        try:
            tenant = uuid.UUID(tenant_id)
        except ValueError:
            return ()
        row = await self._pool.fetchrow(_SELECT, tenant, domain)
        if row is None:
            return ()
        domain_id = str(row["id"])
        return (
            self._open(domain_id, domain, row["rsa_selector"], row["rsa_private"]),
            self._open(domain_id, domain, row["ed25519_selector"], row["ed25519_private"]),
        )

    def _open(self, domain_id: str, domain: str, selector: str, sealed: bytes) -> SigningKey:
        cached = self._opened.get((domain_id, selector))
        if cached is not None:
            return cached
        try:
            pem = self._sealer.open(sealed, domain_id)
        except InvalidTag:
            raise KeyUnreadable(domain) from None
        private = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(private, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
            raise KeyUnreadable(domain)
        key = SigningKey(domain, selector, private)
        if len(self._opened) >= 20_000:
            self._opened.clear()
        self._opened[(domain_id, selector)] = key
        return key

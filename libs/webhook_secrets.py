"""Webhook signing secrets: made in the Standard Webhooks form (`whsec_` + base64 of 32 random
bytes) and stored sealed with the token key ring, bound to their webhook, so a row's secret cannot
be moved to another webhook and a key rotation of the ring does not break stored secrets."""

from __future__ import annotations

import base64
import secrets

from libs.token_keys import KeyRing

__all__ = ["PREFIX", "WebhookSecrets", "raw_secret"]

PREFIX = "whsec_"


def raw_secret(secret: str) -> bytes:
    """The HMAC key a `whsec_…` secret stands for (what Standard Webhooks libraries use)."""
    return base64.b64decode(secret.removeprefix(PREFIX))


class WebhookSecrets:
    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys

    def new(self, webhook_id: str) -> tuple[str, str]:
        """A fresh secret: (`whsec_…` to show once, sealed text to store)."""
        secret = PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
        return secret, self.seal(secret, webhook_id)

    def seal(self, secret: str, webhook_id: str) -> str:
        return self._keys.seal(f"webhook-secret:{webhook_id}", secret.encode())

    def open(self, sealed: str, webhook_id: str) -> str:
        """The `whsec_…` secret; libs.token_keys.TokenInvalid if it was not sealed for this webhook."""
        return self._keys.open(f"webhook-secret:{webhook_id}", sealed).decode()

    def seal_answer(self, answer: bytes, bound_to: str) -> bytes:
        """A remembered CreateWebhook response (it carries the secret), sealed at rest for the
        request_ids table; `bound_to` (owner and request id) keeps it from being moved."""
        return self._keys.seal(f"webhook-create-answer:{bound_to}", answer).encode()

    def open_answer(self, sealed: bytes, bound_to: str) -> bytes:
        return self._keys.open(f"webhook-create-answer:{bound_to}", sealed.decode())

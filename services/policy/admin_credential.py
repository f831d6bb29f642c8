"""Who may call AdminService: the holder of the deployment's admin credential; pure."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from libs.errors import PermissionDenied, Unauthenticated
from services.policy.api_keys import key_prefix

__all__ = ["AdminCredential"]


class AdminCredential:
    def __init__(self, admin_token: str) -> None:
        # Only a digest is kept, and compared in constant time.
        self._digest = hashlib.sha256(admin_token.encode()).digest() if admin_token else b""

    def check(self, presented: Callable[[], str]) -> None:
        """`presented` reads the caller's bearer token (raising when there is none); it is only
        asked once the API is known to be enabled, so a disabled API says so first."""
        if not self._digest:
            raise Unauthenticated(
                "the admin API is disabled on this deployment (POSTWIRE_ADMIN_TOKEN is not set)"
            )
        token = presented()
        if hmac.compare_digest(hashlib.sha256(token.encode()).digest(), self._digest):
            return
        if key_prefix(token):
            raise PermissionDenied("API keys cannot call AdminService; use the admin credential")
        raise Unauthenticated("wrong admin credential")

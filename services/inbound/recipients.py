"""Which RCPT TO addresses the inbound listener takes; pure.

Only three kinds, everything else is refused at RCPT (so nothing else is ever queued or parsed):
a return path `bounces+<token>@<domain>` whose token this key ring minted, on a return-path domain
(the shared host, or `<label>.<any domain>`); the feedback-loop address `fbl@<host>`; and
`postmaster@` a return-path domain (RFC 5321 §4.5.1 requires it; a bare `postmaster` too).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from libs.return_path import LOCAL_PREFIX, ReturnPathConfig

__all__ = ["Kind", "Rcpt", "TokenOpener", "accept_rcpt"]

FEEDBACK_LOCAL = "fbl"


class TokenOpener(Protocol):
    def open(self, token: str) -> tuple[str, int]: ...


class Kind(enum.Enum):
    RETURN_PATH = "return-path"
    FEEDBACK_LOOP = "feedback-loop"
    POSTMASTER = "postmaster"


@dataclass(frozen=True, slots=True)
class Rcpt:
    kind: Kind
    token: str = ""  # RETURN_PATH only


def is_return_path_domain(domain: str, config: ReturnPathConfig) -> bool:
    domain = domain.lower().rstrip(".")
    if domain == config.host:
        return True
    label, dot, parent = domain.partition(".")
    return label == config.label and bool(dot) and "." in parent


def accept_rcpt(address: str, config: ReturnPathConfig, tokens: TokenOpener) -> Rcpt | None:
    """What `address` is, or None when the listener must refuse it (550 5.1.1)."""
    local, at, domain = address.strip().strip("<>").rpartition("@")
    if not at:
        return Rcpt(Kind.POSTMASTER) if address.strip().strip("<>").lower() == "postmaster" else None
    lowered = local.lower()
    if not is_return_path_domain(domain, config):
        return None
    if lowered == "postmaster":
        return Rcpt(Kind.POSTMASTER)
    if lowered == FEEDBACK_LOCAL and domain.lower().rstrip(".") == config.host:
        return Rcpt(Kind.FEEDBACK_LOOP)
    if lowered.startswith(LOCAL_PREFIX):
        token = local[len(LOCAL_PREFIX) :]
        try:
            tokens.open(token)
        except Exception:
            return None
        return Rcpt(Kind.RETURN_PATH, token)
    return None

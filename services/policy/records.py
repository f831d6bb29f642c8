"""What the policy stores hand back: plain values, so use cases and servicers never see asyncpg."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.policy.limits import Limits

__all__ = ["DomainRow", "KeyRecord", "KeyRow", "TenantRow"]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An active key as authentication sees it."""

    tenant_id: str
    scopes: tuple[str, ...]
    prefix: str
    sandbox: bool


@dataclass(frozen=True, slots=True)
class TenantRow:
    id: str
    name: str
    sandbox: bool
    require_tls: bool
    create_time: datetime
    limits: tuple[Limits, ...]


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: str
    tenant_id: str
    prefix: str
    scopes: tuple[str, ...]
    display_name: str
    create_time: datetime
    revoke_time: datetime | None


@dataclass(frozen=True, slots=True)
class DomainRow:
    id: str
    name: str
    rsa_selector: str
    rsa_public: str
    ed25519_selector: str
    ed25519_public: str
    verified: bool
    record_status: dict[str, int]  # purpose name -> RecordStatus value, as stored
    create_time: datetime
    check_time: datetime | None
    verify_time: datetime | None

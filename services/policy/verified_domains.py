"""Which From domains a tenant may send from: its verified domains, plus the deployment's
development domains. Cached with bounded staleness; verify and delete forget at once."""

from __future__ import annotations

from typing import Protocol

from libs.errors import FailedPrecondition
from libs.ttl_cache import TtlCache
from services.policy.domains import normalise_domain

__all__ = ["VerifiedDomains", "VerifiedLookup"]


class VerifiedLookup(Protocol):
    async def is_verified(self, tenant_id: str, name: str) -> bool: ...


class VerifiedDomains:
    def __init__(
        self, store: VerifiedLookup, *, dev_from_domains: frozenset[str], cache_seconds: float
    ) -> None:
        self._store = store
        self._dev = dev_from_domains
        self._verified: TtlCache[bool] = TtlCache(cache_seconds)

    async def check_from(self, tenant_id: str, from_domain: str) -> None:
        """Refuse a From domain that is not one of the tenant's verified domains. One answer for
        unregistered, unverified and another tenant's domain, so none can be told apart."""
        domain = normalise_domain(from_domain)
        if domain in self._dev:
            return
        verified = self._verified.get((tenant_id, domain))
        if verified is None:
            verified = await self._store.is_verified(tenant_id, domain)
            self._verified.put((tenant_id, domain), verified)
        if not verified:
            raise FailedPrecondition(
                f"from.address: '{domain}' is not a verified sending domain of this tenant",
                violations=[
                    (
                        "DOMAIN_NOT_VERIFIED",
                        "from.address",
                        f"register '{domain}' with DomainService, publish its records and verify it",
                    )
                ],
            )

    def forget(self, tenant_id: str, domain: str) -> None:
        self._verified.drop((tenant_id, domain))

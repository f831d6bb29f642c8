"""Use cases of DomainService: register a domain with fresh DKIM keys (private halves sealed
before they are stored), check its records against DNS, delete it. No I/O of its own: the store,
the key maker, the sealer and the DNS lookup are ports."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from libs.errors import InvalidArgument
from libs.request_ids import RequestId
from services.policy.domains import (
    DnsAnswer,
    DomainKeys,
    DomainState,
    Record,
    RecordStatus,
    check_records,
    domain_problem,
    normalise_domain,
    records_for,
)
from services.policy.records import DomainRow

__all__ = ["DnsSettings", "DomainStore", "DomainView", "ManageDomains", "domain_name"]


class DomainStore(Protocol):
    async def create(
        self,
        domain_id: str,
        tenant_id: str,
        name: str,
        *,
        rsa_selector: str,
        rsa_private: bytes,
        rsa_public: str,
        ed25519_selector: str,
        ed25519_private: bytes,
        ed25519_public: str,
    ) -> DomainRow: ...
    async def get(self, tenant_id: str, name: str) -> DomainRow: ...
    async def list(self, tenant_id: str, *, after: str, limit: int) -> list[DomainRow]: ...
    async def record_check(self, domain_id: str, statuses: dict[str, int], verified: bool) -> DomainRow: ...
    async def delete(self, tenant_id: str, name: str) -> None: ...
    async def once(
        self, rid: RequestId | None, create: Callable[[DomainStore], Awaitable[bytes]]
    ) -> bytes: ...


class KeySealer(Protocol):
    def seal(self, plaintext: bytes, associated: str, /) -> bytes: ...


class DnsLookup(Protocol):
    async def answers(self, records: Sequence[Record]) -> dict[str, DnsAnswer]: ...


class VerifiedCache(Protocol):
    def forget(self, tenant_id: str, domain: str) -> None: ...


# Makes a domain's DKIM key pairs; RSA-2048 generation takes tens of milliseconds of CPU, so the
# adapter runs it off the event loop.
MakeKeys = Callable[[], Awaitable[DomainKeys]]


@dataclass(frozen=True, slots=True)
class DnsSettings:
    spf_include: str
    return_path_host: str
    return_path_label: str


@dataclass(frozen=True, slots=True)
class RecordView:
    record: Record
    status: RecordStatus


@dataclass(frozen=True, slots=True)
class DomainView:
    """A domain as the API shows it: the stored row, its state, and each record to publish with
    what the last check found."""

    row: DomainRow
    state: DomainState
    records: tuple[RecordView, ...]


def domain_name(value: str, field: str = "name") -> str:
    name = normalise_domain(value)
    problem = domain_problem(name) if name else "a domain name is required"
    if problem:
        raise InvalidArgument([(field, problem)])
    return name


class ManageDomains:
    def __init__(
        self,
        store: DomainStore,
        sealer: KeySealer,
        make_keys: MakeKeys,
        lookup: DnsLookup,
        settings: DnsSettings,
        verified: VerifiedCache,
    ) -> None:
        self._store = store
        self._sealer = sealer
        self._make_keys = make_keys
        self._lookup = lookup
        self._settings = settings
        self._verified = verified

    def _records(self, row: DomainRow) -> list[Record]:
        return records_for(
            row.name,
            rsa_selector=row.rsa_selector,
            rsa_public=row.rsa_public,
            ed25519_selector=row.ed25519_selector,
            ed25519_public=row.ed25519_public,
            spf_include=self._settings.spf_include,
            return_path_host=self._settings.return_path_host,
            return_path_label=self._settings.return_path_label,
        )

    def view(self, row: DomainRow) -> DomainView:
        return DomainView(
            row=row,
            state=DomainState.of(row.verified),
            records=tuple(
                RecordView(r, RecordStatus(row.record_status.get(r.purpose.name, RecordStatus.UNCHECKED)))
                for r in self._records(row)
            ),
        )

    async def create(
        self, tenant_id: str, name: str, rid: RequestId | None, answer: Callable[[DomainView], bytes]
    ) -> bytes:
        """Name checked → keys made → private halves sealed (bound to the domain id) → stored;
        the serialized answer, or the first answer for `rid`."""
        domain = domain_name(name)

        async def create(store: DomainStore) -> bytes:
            keys = await self._make_keys()
            domain_id = str(uuid.uuid4())
            row = await store.create(
                domain_id,
                tenant_id,
                domain,
                rsa_selector=keys.rsa_selector,
                rsa_private=self._sealer.seal(keys.rsa_private_pem, domain_id),
                rsa_public=keys.rsa_public,
                ed25519_selector=keys.ed25519_selector,
                ed25519_private=self._sealer.seal(keys.ed25519_private_pem, domain_id),
                ed25519_public=keys.ed25519_public,
            )
            return answer(self.view(row))

        return await self._store.once(rid, create)

    async def get(self, tenant_id: str, name: str) -> DomainView:
        return self.view(await self._store.get(tenant_id, domain_name(name)))

    async def list(self, tenant_id: str, *, after: str, limit: int) -> list[DomainView]:
        return [self.view(r) for r in await self._store.list(tenant_id, after=after, limit=limit)]

    async def verify(self, tenant_id: str, name: str) -> DomainView:
        row = await self._store.get(tenant_id, domain_name(name))
        records = self._records(row)
        answers = await self._lookup.answers(records)
        statuses, verified = check_records(records, answers, self._settings.spf_include)
        row = await self._store.record_check(row.id, {k: int(v) for k, v in statuses.items()}, verified)
        self._verified.forget(tenant_id, row.name)
        return self.view(row)

    async def delete(self, tenant_id: str, name: str) -> None:
        domain = domain_name(name)
        await self._store.delete(tenant_id, domain)
        self._verified.forget(tenant_id, domain)

"""Use cases of SuppressionService and of the internal RecordSuppressions: every entry of a
batch is validated before anything is written (one bad entry refuses them all), then the batch is
stored in one transaction, then this replica's admission cache forgets what changed.
No I/O of its own: the store, the cache and the clock are ports."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from libs.errors import InvalidArgument, NotFound
from libs.mail.stream_names import name_problem
from libs.request_ids import RequestId
from services.policy.suppressions import MAX_BATCH, Entry, check_entry, normalise_address

__all__ = ["EntryInput", "ManageSuppressions", "SuppressionStore"]

MAX_VIOLATIONS = 100


class SuppressionStore(Protocol):
    async def upsert(self, tenant_id: str, entries: Sequence[Entry]) -> list[Entry]: ...
    async def get(self, tenant_id: str, address: str, group: str) -> Entry | None: ...
    async def list(
        self, tenant_id: str, *, reason: int, group: str | None, after: tuple[str, str] | None, limit: int
    ) -> list[Entry]: ...
    async def delete(self, tenant_id: str, address: str, group: str) -> bool: ...
    async def once(
        self, rid: RequestId | None, create: Callable[[SuppressionStore], Awaitable[bytes]]
    ) -> bytes: ...


class AdmissionCache(Protocol):
    def changed(self, tenant_id: str, entries: Sequence[tuple[str, str]]) -> None: ...


@dataclass(frozen=True, slots=True)
class EntryInput:
    """One suppression as the caller wrote it, before it is checked."""

    address: str
    reason: int
    group: str = ""
    source_message_id: str = ""
    expire_time: datetime | None = None


def _not_suppressed(address: str, group: str) -> NotFound:
    return NotFound(f"'{address}' is not suppressed" + (f" for group '{group}'" if group else ""))


class ManageSuppressions:
    def __init__(
        self, store: SuppressionStore, cache: AdmissionCache, *, clock: Callable[[], datetime]
    ) -> None:
        self._store = store
        self._cache = cache
        self._clock = clock

    def entries(self, items: Sequence[EntryInput], field: str) -> list[Entry]:
        """Every entry checked; any violation refuses them all."""
        if not items:
            raise InvalidArgument([(field, "at least one suppression is required")])
        if len(items) > MAX_BATCH:
            raise InvalidArgument([(field, f"at most {MAX_BATCH} suppressions per call")])
        now = self._clock()
        entries: list[Entry] = []
        violations: list[tuple[str, str]] = []
        for i, s in enumerate(items):
            entry, problems = check_entry(
                f"{field}[{i}]", s.address, s.reason, s.group, s.source_message_id, s.expire_time, now
            )
            violations += problems
            if entry is not None:
                entries.append(entry)
        if violations:
            raise InvalidArgument(violations[:MAX_VIOLATIONS])
        # The last entry for an address and group wins, as if they were applied in order.
        return list({(e.address, e.group): e for e in entries}.values())

    async def batch_create(
        self,
        tenant_id: str,
        items: Sequence[EntryInput],
        rid: RequestId | None,
        answer: Callable[[list[Entry]], bytes],
    ) -> bytes:
        entries = self.entries(items, "suppressions")

        async def create(store: SuppressionStore) -> bytes:
            return answer(await store.upsert(tenant_id, entries))

        done = await self._store.once(rid, create)
        # After the commit, so no lookup in between can cache the old answer again.
        self._cache.changed(tenant_id, [(e.address, e.group) for e in entries])
        return done

    async def record(self, tenant_id: str, items: Sequence[EntryInput]) -> None:
        """What the platform learnt (bounces, complaints, unsubscribes), for any tenant."""
        entries = self.entries(items, "suppressions")
        await self._store.upsert(tenant_id, entries)
        self._cache.changed(tenant_id, [(e.address, e.group) for e in entries])

    async def get(self, tenant_id: str, address: str, group: str) -> Entry:
        address, group = _address_and_group(address, group)
        found = await self._store.get(tenant_id, address, group)
        if found is None:
            raise _not_suppressed(address, group)
        return found

    async def list(
        self, tenant_id: str, *, reason: int, group: str, after: tuple[str, str] | None, limit: int
    ) -> list[Entry]:
        if group and (problem := name_problem(group)):
            raise InvalidArgument([("unsubscribe_group", problem)])
        return await self._store.list(tenant_id, reason=reason, group=group or None, after=after, limit=limit)

    async def delete(self, tenant_id: str, address: str, group: str) -> None:
        address, group = _address_and_group(address, group)
        if not await self._store.delete(tenant_id, address, group):
            raise _not_suppressed(address, group)
        self._cache.changed(tenant_id, [(address, group)])


def _address_and_group(address: str, group: str) -> tuple[str, str]:
    violations = []
    if "@" not in address:
        violations.append(("address", "an email address is required"))
    problem = group and name_problem(group)
    if problem:
        violations.append(("unsubscribe_group", problem))
    if violations:
        raise InvalidArgument(violations)
    return normalise_address(address), group

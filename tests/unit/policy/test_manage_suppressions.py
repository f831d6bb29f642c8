"""A batch of suppressions: every entry validated before any write, written once per request
id, and the admission cache told after the write."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from libs.errors import InvalidArgument
from libs.request_ids import RequestId
from services.policy.manage_suppressions import EntryInput, ManageSuppressions
from services.policy.suppressions import Entry, Reason
from tests.unit.policy.fakes import OnceStore

TENANT = "7d1f3c1e-0000-4000-8000-000000000001"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Store(OnceStore):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[list[Entry]] = []

    async def upsert(self, tenant_id: str, entries: Sequence[Entry]) -> list[Entry]:
        self.log.append("upsert")
        self.written.append(list(entries))
        return list(entries)

    async def get(self, tenant_id: str, address: str, group: str) -> Entry | None:
        return None

    async def list(
        self, tenant_id: str, *, reason: int, group: str | None, after: tuple[str, str] | None, limit: int
    ) -> list[Entry]:
        return []

    async def delete(self, tenant_id: str, address: str, group: str) -> bool:
        self.log.append("delete")
        return True


class Cache:
    def __init__(self, store: Store) -> None:
        self._store = store
        self.changed_pairs: list[tuple[str, str]] = []

    def changed(self, tenant_id: str, entries: Sequence[tuple[str, str]]) -> None:
        self._store.log.append("cache")
        self.changed_pairs += entries


def _manage() -> tuple[ManageSuppressions, Store, Cache]:
    store = Store()
    cache = Cache(store)
    return ManageSuppressions(store, cache, clock=lambda: NOW), store, cache


def _answer(entries: list[Entry]) -> bytes:
    return ",".join(e.address for e in entries).encode()


async def test_one_bad_entry_refuses_the_batch_before_any_write() -> None:
    manage, store, _ = _manage()
    items = [
        EntryInput("ok@example.org", Reason.MANUAL),
        EntryInput("not-an-address", Reason.MANUAL),
        EntryInput("late@example.org", Reason.MANUAL, expire_time=NOW - timedelta(seconds=1)),
        EntryInput("group@example.org", Reason.HARD_BOUNCE, group="news"),
    ]

    with pytest.raises(InvalidArgument) as refused:
        await manage.batch_create(TENANT, items, None, _answer)

    assert [f for f, _ in refused.value.violations] == [
        "suppressions[1].address",
        "suppressions[2].expire_time",
        "suppressions[3].unsubscribe_group",
    ]
    assert store.log == []


async def test_a_batch_is_normalised_written_then_the_cache_told() -> None:
    manage, store, cache = _manage()
    items = [
        EntryInput("Ada@Example.org", Reason.MANUAL),
        EntryInput("ada@example.org", Reason.UNSUBSCRIBE, group="news"),
        EntryInput("ADA@example.org", Reason.COMPLAINT),  # the last one for an address and group wins
    ]

    answer = await manage.batch_create(TENANT, items, None, _answer)

    assert store.log == ["upsert", "cache"]
    assert [(e.address, e.group, e.reason) for e in store.written[0]] == [
        ("ada@example.org", "", Reason.COMPLAINT),
        ("ada@example.org", "news", Reason.UNSUBSCRIBE),
    ]
    assert answer == b"ada@example.org,ada@example.org"
    assert cache.changed_pairs == [("ada@example.org", ""), ("ada@example.org", "news")]


async def test_a_retried_request_id_writes_nothing_more() -> None:
    manage, store, _ = _manage()
    rid = RequestId(TENANT, "BatchCreateSuppressions", "r-1", b"fp")
    items = [EntryInput("ada@example.org", Reason.MANUAL)]

    first = await manage.batch_create(TENANT, items, rid, _answer)
    again = await manage.batch_create(TENANT, items, rid, _answer)

    assert again == first
    assert len(store.written) == 1
    assert store.log == ["upsert", "cache", "replay", "cache"]


async def test_an_empty_batch_is_refused() -> None:
    manage, store, _ = _manage()

    with pytest.raises(InvalidArgument) as refused:
        await manage.batch_create(TENANT, [], None, _answer)

    assert refused.value.violations[0][0] == "suppressions"
    assert store.log == []

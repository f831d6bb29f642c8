"""Registering a domain: name checked, keys made, private halves sealed (bound to the domain id)
before they are stored; verification forgets the admission cache."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from libs.errors import InvalidArgument
from libs.request_ids import RequestId
from services.policy.domains import DnsAnswer, DomainKeys, DomainState, Record, RecordStatus
from services.policy.manage_domains import DnsSettings, DomainView, ManageDomains
from services.policy.records import DomainRow
from tests.unit.policy.fakes import OnceStore, XorSealer

TENANT = "7d1f3c1e-0000-4000-8000-000000000001"
KEYS = DomainKeys("pwr-1", b"RSA-PRIVATE", "UlNB", "pwe-1", b"ED-PRIVATE", "RUQ=")
SETTINGS = DnsSettings("_spf.postwire.test", "bounces.postwire.test", "pw-bounces")


class Domains(OnceStore):
    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, DomainRow] = {}
        self.stored_private: list[bytes] = []

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
    ) -> DomainRow:
        self.log.append("store")
        self.stored_private += [rsa_private, ed25519_private]
        row = DomainRow(
            domain_id, name, rsa_selector, rsa_public, ed25519_selector, ed25519_public,
            False, {}, datetime.now(UTC), None, None,
        )  # fmt: skip
        self.rows[name] = row
        return row

    async def get(self, tenant_id: str, name: str) -> DomainRow:
        return self.rows[name]

    async def list(self, tenant_id: str, *, after: str, limit: int) -> list[DomainRow]:
        return list(self.rows.values())

    async def record_check(self, domain_id: str, statuses: dict[str, int], verified: bool) -> DomainRow:
        self.log.append("record_check")
        (row,) = self.rows.values()
        row = replace(row, record_status=statuses, verified=verified)
        self.rows[row.name] = row
        return row

    async def delete(self, tenant_id: str, name: str) -> None:
        self.log.append("delete")


class World:
    def __init__(self, store: Domains) -> None:
        self.store = store
        self.forgotten: list[tuple[str, str]] = []
        self.answers: dict[str, DnsAnswer] = {}

    async def make_keys(self) -> DomainKeys:
        self.store.log.append("keys")
        return KEYS

    async def answers_for(self, records: Sequence[Record]) -> dict[str, DnsAnswer]:
        self.store.log.append("dns")
        return self.answers

    def forget(self, tenant_id: str, domain: str) -> None:
        self.store.log.append("forget")
        self.forgotten.append((tenant_id, domain))


class Lookup:
    def __init__(self, world: World) -> None:
        self._world = world

    async def answers(self, records: Sequence[Record]) -> dict[str, DnsAnswer]:
        return await self._world.answers_for(records)


def _domains() -> tuple[ManageDomains, Domains, World, XorSealer]:
    store = Domains()
    world = World(store)
    sealer = XorSealer()
    return ManageDomains(store, sealer, world.make_keys, Lookup(world), SETTINGS, world), store, world, sealer


def _name(view: DomainView) -> bytes:
    return view.row.name.encode()


async def test_keys_are_made_then_sealed_bound_to_the_domain_id_then_stored() -> None:
    domains, store, _, sealer = _domains()

    answer = await domains.create(TENANT, " Mail.Example.ORG. ", None, _name)

    assert answer == b"mail.example.org"
    assert store.log == ["keys", "store"]
    assert b"RSA-PRIVATE" not in b"".join(store.stored_private)
    assert b"ED-PRIVATE" not in b"".join(store.stored_private)
    (row,) = store.rows.values()
    assert sealer.bound == [row.id, row.id]


async def test_a_bad_name_is_refused_before_keys_are_made() -> None:
    domains, store, _, _ = _domains()

    with pytest.raises(InvalidArgument) as refused:
        await domains.create(TENANT, "localhost", None, _name)

    assert refused.value.violations[0][0] == "name"
    assert store.log == []


async def test_a_retried_request_id_makes_no_second_domain() -> None:
    domains, store, _, _ = _domains()
    rid = RequestId(TENANT, "CreateDomain", "r-1", b"fp")

    first = await domains.create(TENANT, "example.org", rid, _name)
    again = await domains.create(TENANT, "example.org", rid, _name)

    assert again == first
    assert store.log == ["keys", "store", "replay"]


async def test_a_new_domain_is_pending_with_every_record_unchecked() -> None:
    domains, _, _, _ = _domains()
    await domains.create(TENANT, "example.org", None, _name)

    view = await domains.get(TENANT, "example.org")

    assert view.state is DomainState.PENDING
    assert {r.status for r in view.records} == {RecordStatus.UNCHECKED}


async def test_verifying_asks_dns_stores_the_result_then_forgets_the_cached_answer() -> None:
    domains, store, world, _ = _domains()
    await domains.create(TENANT, "example.org", None, _name)
    store.log.clear()

    view = await domains.verify(TENANT, "example.org")

    assert store.log == ["dns", "record_check", "forget"]
    assert world.forgotten == [(TENANT, "example.org")]
    # Nothing answered: every lookup failed, so nothing is verified.
    assert view.state is DomainState.PENDING
    assert {r.status for r in view.records} == {RecordStatus.LOOKUP_FAILED}

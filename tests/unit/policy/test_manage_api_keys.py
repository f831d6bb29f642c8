"""Creating an API key: only its HMAC is stored, the plaintext is answered once, and a remembered
answer (for a retried request_id) is sealed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from libs.errors import InvalidArgument
from libs.page_tokens import ADMIN_CALLER
from libs.request_ids import RequestId
from services.policy.api_keys import NewKey, hash_key
from services.policy.manage_api_keys import ManageApiKeys
from services.policy.records import KeyRow
from tests.unit.policy.fakes import OnceStore, XorSealer

PEPPER = b"pepper"
TENANT = "7d1f3c1e-0000-4000-8000-000000000001"
KEY = NewKey(key="pw_0123abcd_s3cr3t-material", prefix="pw_0123abcd")


class Keys(OnceStore):
    def __init__(self) -> None:
        super().__init__()
        self.created: list[dict[str, object]] = []

    async def create_key(
        self, tenant_id: str, *, prefix: str, key_hash: bytes, scopes: Sequence[str], display_name: str
    ) -> KeyRow:
        self.log.append("create")
        self.created.append({"prefix": prefix, "key_hash": key_hash, "scopes": list(scopes)})
        return KeyRow("k1", tenant_id, prefix, tuple(scopes), display_name, datetime.now(UTC), None)

    async def list_keys(self, tenant_id: str, *, show_revoked: bool, after: str, limit: int) -> list[KeyRow]:
        raise AssertionError("not used")

    async def revoke_key(self, id_or_prefix: str) -> KeyRow:
        raise AssertionError("not used")


def _answer(row: KeyRow, secret: str) -> bytes:
    return f"{row.prefix}|{secret}".encode()


def _rid(request_id: str) -> RequestId:
    return RequestId(ADMIN_CALLER, "CreateApiKey", request_id, b"fp")


async def test_the_hash_is_stored_and_the_plaintext_is_answered() -> None:
    store, sealer = Keys(), XorSealer()
    keys = ManageApiKeys(store, sealer, PEPPER, new_key=lambda: KEY)

    answer = await keys.create(TENANT, ["send"], "prod", None, _answer)

    assert answer == f"{KEY.prefix}|{KEY.key}".encode()
    assert store.created == [
        {"prefix": KEY.prefix, "key_hash": hash_key(KEY.key, PEPPER), "scopes": ["send"]}
    ]
    assert KEY.key.encode() not in repr(store.created).encode()


async def test_a_retried_request_id_gets_the_same_key_back_without_a_second_one() -> None:
    store, sealer = Keys(), XorSealer()
    made = iter([KEY, NewKey(key="pw_ffffffff_other", prefix="pw_ffffffff")])
    keys = ManageApiKeys(store, sealer, PEPPER, new_key=lambda: next(made))

    first = await keys.create(TENANT, ["send"], "", _rid("r-1"), _answer)
    again = await keys.create(TENANT, ["send"], "", _rid("r-1"), _answer)

    assert again == first
    assert store.log == ["create", "replay"]
    # At rest the remembered answer does not hold the plaintext key.
    (kept,) = store.answers.values()
    assert KEY.key.encode() not in kept
    assert sealer.bound == [f"request_id:{ADMIN_CALLER}:CreateApiKey:r-1"]


async def test_every_field_is_checked_before_a_key_is_made() -> None:
    store = Keys()
    made: list[int] = []

    def new_key() -> NewKey:
        made.append(1)
        return KEY

    keys = ManageApiKeys(store, XorSealer(), PEPPER, new_key=new_key)

    with pytest.raises(InvalidArgument) as refused:
        await keys.create("", ["send", "nope"], "x" * 129, None, _answer)

    assert {f for f, _ in refused.value.violations} == {"scopes[1]", "tenant_id", "display_name"}
    assert made == [] and store.log == []

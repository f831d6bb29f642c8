"""API keys: pw_<prefix>_<secret>; only an HMAC of the key is stored."""

from __future__ import annotations

import re

import pytest

from services.policy.api_keys import generate_key, hash_key, key_prefix

PEPPER = b"pepper-one-0123456789abcdef"
OTHER_PEPPER = b"pepper-two-0123456789abcdef"


def test_generated_keys_are_unique() -> None:
    keys = [generate_key() for _ in range(500)]
    assert len({k.key for k in keys}) == 500
    assert len({k.prefix for k in keys}) == 500


def test_key_shape_and_prefix_is_recoverable() -> None:
    for _ in range(500):  # secrets may contain '_' and '-'; the prefix must still be found
        new = generate_key()
        assert re.fullmatch(r"pw_[0-9a-f]{8}", new.prefix)
        assert new.key.startswith(new.prefix + "_")
        assert len(new.key) >= len(new.prefix) + 1 + 43  # 256-bit secret, base64url
        assert key_prefix(new.key) == new.prefix


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "pw_",
        "pw_abcd1234",
        "pw_short_secret",
        "sk_abcd1234_secret",
        "Bearer pw_abcd1234_x",
        "PW_abcd1234_x",
    ],
)
def test_key_prefix_of_something_not_shaped_like_a_key_is_empty(presented: str) -> None:
    assert key_prefix(presented) == ""


def test_hash_is_deterministic_per_pepper() -> None:
    key = generate_key().key
    assert hash_key(key, PEPPER) == hash_key(key, PEPPER)
    assert len(hash_key(key, PEPPER)) == 32


def test_hash_differs_across_peppers_and_keys() -> None:
    a, b = generate_key().key, generate_key().key
    assert hash_key(a, PEPPER) != hash_key(a, OTHER_PEPPER)
    assert hash_key(a, PEPPER) != hash_key(b, PEPPER)


def test_hash_never_equals_or_contains_the_key() -> None:
    new = generate_key()
    digest = hash_key(new.key, PEPPER)
    assert digest != new.key.encode()
    assert new.key.encode() not in digest
    assert new.key not in digest.hex()
    secret = new.key[len(new.prefix) + 1 :]
    assert secret.encode() not in digest

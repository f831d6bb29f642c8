"""Return-path tokens and envelope senders: round trip, case, tampering, rotation, length."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.config import ConfigError
from libs.return_path import (
    ReturnPathConfig,
    ReturnPathTokens,
    TokenInvalid,
    envelope_from,
    token_of,
)
from libs.token_keys import DEV_TOKEN_KEYS, KeyRing
from services.policy.config import PolicyConfig

KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()
OLD = KeyRing.parse(f"old:{KEY_A}")
ROTATED = KeyRing.parse(f"new:{KEY_B},old:{KEY_A}")
MESSAGE_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
CONFIG = ReturnPathConfig(host="bounces.postwire.example", label="pw-bounces")


def test_a_token_opens_to_its_message_and_recipient() -> None:
    tokens = ReturnPathTokens(OLD)
    token = tokens.mint(MESSAGE_ID, 7)
    assert tokens.open(token) == (MESSAGE_ID, 7)
    assert token == token.lower() and token.isalnum() and "=" not in token


def test_receivers_that_change_the_case_of_the_local_part_do_not_break_it() -> None:
    tokens = ReturnPathTokens(OLD)
    token = tokens.mint(MESSAGE_ID, 3)
    assert tokens.open(token.upper()) == (MESSAGE_ID, 3)
    assert tokens.open(token[:10].upper() + token[10:]) == (MESSAGE_ID, 3)


def test_the_local_part_fits_rfc_5321s_64_octets() -> None:
    token = ReturnPathTokens(OLD).mint(str(uuid.UUID(int=2**128 - 1)), 65535)
    local = envelope_from(token, "example.com", verified=True, config=CONFIG).partition("@")[0]
    assert local == f"bounces+{token}"
    assert len(local.encode()) <= 64


def _flip(token: str, bit: int) -> str:
    raw = bytearray(base64.b32decode(token.upper()))
    raw[bit // 8] ^= 1 << (bit % 8)
    return base64.b32encode(bytes(raw)).decode().lower()


@pytest.mark.parametrize("bit", [0, 8, 20, 16 * 8, 18 * 8 + 3, 19 * 8 + 7, 20 * 8, 29 * 8 + 7])
def test_any_flipped_bit_is_refused(bit: int) -> None:
    tokens = ReturnPathTokens(OLD)
    with pytest.raises(TokenInvalid):
        tokens.open(_flip(tokens.mint(MESSAGE_ID, 1), bit))


def test_a_token_from_another_key_is_refused() -> None:
    token = ReturnPathTokens(KeyRing.parse(f"old:{KEY_B}")).mint(MESSAGE_ID, 1)
    with pytest.raises(TokenInvalid):
        ReturnPathTokens(OLD).open(token)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1],
        lambda t: t[:-8],
        lambda t: t + "a",
        lambda t: t[:-1] + "1",  # outside the base32 alphabet
        lambda t: t[:-1] + "é",
        lambda t: "",
        lambda t: t[:40] + "========",
    ],
)
def test_truncated_extended_or_garbled_tokens_are_refused(mangle) -> None:
    tokens = ReturnPathTokens(OLD)
    with pytest.raises(TokenInvalid):
        tokens.open(mangle(tokens.mint(MESSAGE_ID, 1)))


def test_tokens_minted_before_a_rotation_still_open_and_new_ones_use_the_new_key() -> None:
    before = ReturnPathTokens(OLD).mint(MESSAGE_ID, 4)
    rotated = ReturnPathTokens(ROTATED)
    assert rotated.open(before) == (MESSAGE_ID, 4)
    after = rotated.mint(MESSAGE_ID, 4)
    assert after != before
    with pytest.raises(TokenInvalid):
        ReturnPathTokens(OLD).open(after)


def test_the_mac_key_is_derived_not_the_ring_key_itself() -> None:
    token = ReturnPathTokens(OLD).mint(MESSAGE_ID, 0)
    raw = base64.b32decode(token.upper())
    raw_key_mac = hmac.new(b"a" * 32, raw[:20], hashlib.sha256).digest()[:10]
    assert raw[20:] != raw_key_mac


@pytest.mark.parametrize("index", [-1, 65536])
def test_indexes_outside_two_bytes_are_a_programming_error(index: int) -> None:
    with pytest.raises(ValueError):
        ReturnPathTokens(OLD).mint(MESSAGE_ID, index)


@given(st.uuids(), st.integers(min_value=0, max_value=999))
def test_every_id_and_index_round_trips(message_id: uuid.UUID, index: int) -> None:
    tokens = ReturnPathTokens(ROTATED)
    token = tokens.mint(str(message_id), index)
    assert len(f"bounces+{token}") <= 64
    assert tokens.open(token) == (str(message_id), index)
    assert tokens.open(token.upper()) == (str(message_id), index)


def test_envelope_sender_uses_the_label_under_a_verified_domain_else_the_shared_host() -> None:
    token = ReturnPathTokens(OLD).mint(MESSAGE_ID, 0)
    assert envelope_from(token, "Mail.Acme.example", verified=True, config=CONFIG) == (
        f"bounces+{token}@pw-bounces.mail.acme.example"
    )
    assert envelope_from(token, "bücher.example", verified=True, config=CONFIG) == (
        f"bounces+{token}@pw-bounces.xn--bcher-kva.example"
    )
    assert envelope_from(token, "acme.example", verified=False, config=CONFIG) == (
        f"bounces+{token}@bounces.postwire.example"
    )


def test_the_token_is_read_back_from_an_address_in_any_case() -> None:
    tokens = ReturnPathTokens(OLD)
    token = tokens.mint(MESSAGE_ID, 2)
    address = envelope_from(token, "acme.example", verified=True, config=CONFIG).upper()
    assert tokens.open(token_of(address)) == (MESSAGE_ID, 2)
    for other in ("noreply@acme.example", "bounces-x@acme.example", "bounces+"):
        with pytest.raises(TokenInvalid):
            token_of(other)


def test_config_defaults_and_policy_reads_the_same_definition() -> None:
    assert ReturnPathConfig.from_env({}) == ReturnPathConfig("bounces.postwire.localhost", "pw-bounces")
    env = {"POSTWIRE_RETURN_PATH_HOST": "RP.Example.NET.", "POSTWIRE_RETURN_PATH_LABEL": "RP"}
    assert ReturnPathConfig.from_env(env) == ReturnPathConfig("rp.example.net", "rp")
    assert PolicyConfig.from_env(env).return_path == ReturnPathConfig("rp.example.net", "rp")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POSTWIRE_RETURN_PATH_HOST", "bounces example.net"),
        ("POSTWIRE_RETURN_PATH_HOST", "bounces..example.net"),
        ("POSTWIRE_RETURN_PATH_HOST", "-bounces.example.net"),
        ("POSTWIRE_RETURN_PATH_LABEL", "pw.bounces"),
        ("POSTWIRE_RETURN_PATH_LABEL", "pw_bounces"),
        ("POSTWIRE_RETURN_PATH_LABEL", "-pw"),
    ],
)
def test_malformed_config_fails_fast_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        ReturnPathConfig.from_env({name: value})


def test_the_readme_example_is_a_real_token_of_the_dev_ring() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    example = readme.split("# e.g. bounces+", 1)[1].split("@", 1)[0]
    assert ReturnPathTokens(KeyRing.parse(DEV_TOKEN_KEYS)).open(example) == (MESSAGE_ID, 0)

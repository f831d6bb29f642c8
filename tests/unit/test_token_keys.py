"""POSTWIRE_TOKEN_KEYS: parsing, sealing, rotation and purpose binding."""

from __future__ import annotations

import base64

import pytest

from libs.config import ConfigError
from libs.token_keys import DEV_TOKEN_KEYS, ENV_VAR, KeyRing, TokenInvalid, generate_token_keys
from services.events.config import EventsConfig
from services.policy.config import PolicyConfig
from services.template.config import TemplateConfig

KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()


def test_unset_or_empty_falls_back_to_the_documented_dev_ring() -> None:
    assert DEV_TOKEN_KEYS == "dev:ZGV2LW9ubHktdG9rZW4ta2V5LW5ldmVyLWluLXByb2Q="
    dev = KeyRing.parse(DEV_TOKEN_KEYS)
    assert KeyRing.from_env({}) == dev
    assert KeyRing.from_env({ENV_VAR: "  "}) == dev
    assert [kid for kid, _ in dev.keys] == ["dev"]


def test_a_ring_parses_in_order_and_accepts_both_base64_alphabets_and_no_padding() -> None:
    url_safe = base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode().rstrip("=")
    ring = KeyRing.from_env({ENV_VAR: f"new:{KEY_B}, old:{KEY_A},u_1-x:{url_safe}"})
    assert ring.keys == (("new", b"b" * 32), ("old", b"a" * 32), ("u_1-x", b"\xfb\xff" * 16))


@pytest.mark.parametrize(
    "raw",
    [
        "k1",
        f":{KEY_A}",
        f"k 1:{KEY_A}",
        f"k1:{KEY_A},",
        f"k1:{KEY_A},k1:{KEY_B}",
        "k1:not*base64",
        f"k1:{base64.b64encode(b'short').decode()}",
        f"k1:{base64.b64encode(b'x' * 64).decode()}",
        f"{'k' * 33}:{KEY_A}",
    ],
)
def test_malformed_rings_are_config_errors_naming_the_variable_without_the_key(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        KeyRing.from_env({ENV_VAR: raw})
    message = str(caught.value)
    assert message.startswith(f"{ENV_VAR}: ")
    for secret in (KEY_A, KEY_B):
        assert secret not in message


def test_seal_and_open_round_trip_with_an_url_safe_token_naming_its_kid() -> None:
    ring = KeyRing.parse(f"k1:{KEY_A}")
    token = ring.seal("page_token", b"payload")
    assert token.startswith("k1.")
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert b"payload" not in base64.urlsafe_b64decode(token[3:] + "==")
    assert ring.open("page_token", token) == b"payload"
    # A fresh nonce each time: equal payloads do not give equal tokens.
    assert ring.seal("page_token", b"payload") != token


def test_the_purpose_is_bound_so_one_kind_of_token_never_opens_as_another() -> None:
    ring = KeyRing.parse(f"k1:{KEY_A}")
    with pytest.raises(TokenInvalid):
        ring.open("unsubscribe", ring.seal("page_token", b"payload"))


def test_rotation_new_key_first_old_key_second_then_old_key_removed() -> None:
    old = KeyRing.parse(f"old:{KEY_A}")
    rotated = KeyRing.parse(f"new:{KEY_B},old:{KEY_A}")
    in_flight = old.seal("page_token", b"p")
    assert rotated.open("page_token", in_flight) == b"p"
    fresh = rotated.seal("page_token", b"q")
    assert fresh.startswith("new.")
    retired = KeyRing.parse(f"new:{KEY_B}")
    assert retired.open("page_token", fresh) == b"q"
    with pytest.raises(TokenInvalid):
        retired.open("page_token", in_flight)


def test_a_key_under_the_same_kid_but_other_bytes_does_not_open() -> None:
    token = KeyRing.parse(f"k1:{KEY_A}").seal("page_token", b"p")
    with pytest.raises(TokenInvalid):
        KeyRing.parse(f"k1:{KEY_B}").open("page_token", token)


@pytest.mark.parametrize(
    "token", ["", "k1", "k1.", "k1.AAAA", "zz.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "k1.%%%"]
)
def test_anything_not_sealed_by_the_ring_is_token_invalid(token: str) -> None:
    with pytest.raises(TokenInvalid):
        KeyRing.parse(f"k1:{KEY_A}").open("page_token", token)


def test_tampering_with_any_character_is_detected() -> None:
    ring = KeyRing.parse(f"k1:{KEY_A}")
    token = ring.seal("page_token", b"position")
    for i in range(3, len(token)):
        flipped = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        with pytest.raises(TokenInvalid):
            ring.open("page_token", flipped)


def test_generated_rings_parse_and_differ() -> None:
    first, second = generate_token_keys(), generate_token_keys()
    assert first != second
    assert len(KeyRing.parse(first).keys[0][1]) == 32


def test_the_repr_names_kids_but_never_keys() -> None:
    ring = KeyRing.parse(f"new:{KEY_B},old:{KEY_A}")
    text = repr(ring) + str(ring)
    assert "new" in text and "old" in text
    assert KEY_A not in text and "aaaa" not in text and "bbbb" not in text


@pytest.mark.parametrize("config", [EventsConfig, TemplateConfig, PolicyConfig])
def test_every_service_serving_a_list_method_loads_the_ring_at_start(config: type) -> None:
    assert config.from_env({}).token_keys == KeyRing.parse(DEV_TOKEN_KEYS)
    assert config.from_env({ENV_VAR: f"k1:{KEY_A}"}).token_keys == KeyRing.parse(f"k1:{KEY_A}")
    with pytest.raises(ConfigError, match=ENV_VAR):
        config.from_env({ENV_VAR: "k1:short"})

"""The dev switch as a pure function of the environment."""

from __future__ import annotations

import pytest

from libs.dev_switch import (
    DEV_ONLY_SETTINGS,
    DEV_PEPPER,
    DEV_SECRET_KEY,
    DEV_TOKEN_KEYS,
    SECRETS_BY_SERVICE,
    refusal,
    unsafe_settings,
)

REAL = {
    "POSTWIRE_API_KEY_PEPPER": "real-pepper",
    "POSTWIRE_SECRET_KEY": "real-secret-key",
    "POSTWIRE_INTERNAL_TOKEN": "real-internal-token",
    "POSTWIRE_TOKEN_KEYS": "k1:cmVhbC10b2tlbi1rZXktb2YtMzItYnl0ZXMtbG9uZyE=",
}


@pytest.mark.parametrize("service", sorted(SECRETS_BY_SERVICE))
def test_real_secrets_and_no_dev_settings_start(service: str) -> None:
    assert unsafe_settings(REAL, service) == []
    assert refusal(REAL, service) is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("POSTWIRE_API_KEY_PEPPER", DEV_PEPPER),
        ("POSTWIRE_API_KEY_PEPPER", ""),
        ("POSTWIRE_API_KEY_PEPPER", "  "),
        ("POSTWIRE_SECRET_KEY", DEV_SECRET_KEY),
        ("POSTWIRE_INTERNAL_TOKEN", ""),
        ("POSTWIRE_TOKEN_KEYS", DEV_TOKEN_KEYS),
        ("POSTWIRE_TOKEN_KEYS", ""),
        # Every key of a ring opens tokens: the public dev key behind a real one is refused too.
        ("POSTWIRE_TOKEN_KEYS", "k1:cmVhbC10b2tlbi1rZXktb2YtMzItYnl0ZXMtbG9uZyE=," + DEV_TOKEN_KEYS),
        ("POSTWIRE_TOKEN_KEYS", "other:" + DEV_TOKEN_KEYS.partition(":")[2]),
    ],
)
def test_a_default_secret_is_refused_outside_dev_and_allowed_in_dev(variable: str, value: str) -> None:
    env = REAL | {variable: value}
    # A service not in the table is checked for every secret.
    assert unsafe_settings(env, "unknown") == [variable]
    assert unsafe_settings(env | {"POSTWIRE_ENV": "dev"}, "unknown") == []


def test_an_unset_secret_counts_as_default() -> None:
    env = {k: v for k, v in REAL.items() if k != "POSTWIRE_INTERNAL_TOKEN"}
    assert unsafe_settings(env, "template") == ["POSTWIRE_INTERNAL_TOKEN"]


def test_mta_worker_needs_the_secret_key_that_opens_dkim_keys() -> None:
    # It signs with the keys policy sealed, so a published default would expose every domain's key.
    assert "POSTWIRE_SECRET_KEY" in unsafe_settings(
        REAL | {"POSTWIRE_SECRET_KEY": DEV_SECRET_KEY}, "mta_worker"
    )
    assert "POSTWIRE_SECRET_KEY" in unsafe_settings({}, "mta_worker")
    assert unsafe_settings(REAL, "mta_worker") == []


def test_inbound_needs_a_real_key_ring_and_nothing_else() -> None:
    # The ring opens return-path tokens; the public dev ring would let anyone forge bounces.
    assert unsafe_settings({}, "inbound") == ["POSTWIRE_TOKEN_KEYS"]
    assert unsafe_settings({"POSTWIRE_TOKEN_KEYS": DEV_TOKEN_KEYS}, "inbound") == ["POSTWIRE_TOKEN_KEYS"]
    assert unsafe_settings({"POSTWIRE_TOKEN_KEYS": REAL["POSTWIRE_TOKEN_KEYS"]}, "inbound") == []


def test_only_the_secrets_a_service_uses_are_required() -> None:
    assert unsafe_settings({"POSTWIRE_INTERNAL_TOKEN": "t"}, "submission") == []
    assert unsafe_settings({}, "edge") == []
    assert unsafe_settings({"POSTWIRE_INTERNAL_TOKEN": "t"}, "policy") == [
        "POSTWIRE_API_KEY_PEPPER",
        "POSTWIRE_SECRET_KEY",
        "POSTWIRE_TOKEN_KEYS",
    ]


@pytest.mark.parametrize("setting", DEV_ONLY_SETTINGS)
@pytest.mark.parametrize("service", sorted(SECRETS_BY_SERVICE))
def test_dev_only_settings_are_refused_by_every_service_outside_dev(setting: str, service: str) -> None:
    assert unsafe_settings(REAL | {setting: "1"}, service) == [setting]
    assert unsafe_settings(REAL | {setting: "1", "POSTWIRE_ENV": "dev"}, service) == []


@pytest.mark.parametrize("env_value", ["prod", "production", "development", "", "dev2"])
def test_only_the_exact_word_dev_switches(env_value: str) -> None:
    assert unsafe_settings({"POSTWIRE_ENV": env_value}, "submission") == ["POSTWIRE_INTERNAL_TOKEN"]


def test_the_refusal_names_variables_and_the_switch_but_no_value() -> None:
    line = refusal(
        REAL | {"POSTWIRE_SECRET_KEY": DEV_SECRET_KEY, "POSTWIRE_DEV_FROM_DOMAINS": "x.test"}, "policy"
    )
    assert line is not None and "\n" not in line
    assert "POSTWIRE_SECRET_KEY" in line and "POSTWIRE_DEV_FROM_DOMAINS" in line
    assert "POSTWIRE_ENV=dev" in line
    assert DEV_SECRET_KEY not in line and "x.test" not in line and "real-pepper" not in line

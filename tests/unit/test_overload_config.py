"""POSTWIRE_MAX_IN_FLIGHT, _WAIT_MS and POSTWIRE_DB_ACQUIRE_TIMEOUT_SECONDS: defaults per service,
overrides, and a clear refusal of nonsense."""

from __future__ import annotations

import pytest

from libs.config import CommonConfig, ConfigError


def _common(service: str, **env: str) -> CommonConfig:
    return CommonConfig.from_env(env, service=service, default_port=50000)


def test_defaults_per_service() -> None:
    assert _common("edge").max_in_flight == 64
    assert _common("submission").max_in_flight == 64
    assert _common("policy").max_in_flight == 128
    assert _common("router").max_in_flight == 64
    assert _common("edge").max_in_flight_wait_seconds == pytest.approx(0.01)
    assert _common("policy").db_acquire_timeout_seconds == 5.0


def test_overrides() -> None:
    common = _common(
        "edge",
        POSTWIRE_MAX_IN_FLIGHT="3",
        POSTWIRE_MAX_IN_FLIGHT_WAIT_MS="0",
        POSTWIRE_DB_ACQUIRE_TIMEOUT_SECONDS="0.5",
    )
    assert (common.max_in_flight, common.max_in_flight_wait_seconds, common.db_acquire_timeout_seconds) == (
        3,
        0.0,
        0.5,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POSTWIRE_MAX_IN_FLIGHT", "0"),
        ("POSTWIRE_MAX_IN_FLIGHT", "many"),
        ("POSTWIRE_MAX_IN_FLIGHT_WAIT_MS", "-1"),
        ("POSTWIRE_DB_ACQUIRE_TIMEOUT_SECONDS", "0"),
    ],
)
def test_nonsense_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        _common("edge", **{name: value})

"""POSTWIRE_METRICS_LISTEN: unset serves nothing; a malformed value stops the service at start."""

from __future__ import annotations

import pytest

from libs.config import CommonConfig, ConfigError


def _common(env: dict[str, str]) -> CommonConfig:
    return CommonConfig.from_env(env, service="events", default_port=50066)


def test_unset_means_no_metrics_endpoint() -> None:
    assert _common({}).metrics_listen is None
    assert _common({"POSTWIRE_METRICS_LISTEN": " "}).metrics_listen is None


def test_host_and_port_are_read() -> None:
    assert _common({"POSTWIRE_METRICS_LISTEN": "0.0.0.0:9464"}).metrics_listen == ("0.0.0.0", 9464)


@pytest.mark.parametrize("raw", ["9464", "localhost", "host:port", "127.0.0.1:70000"])
def test_a_malformed_value_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="POSTWIRE_METRICS_LISTEN"):
        _common({"POSTWIRE_METRICS_LISTEN": raw})

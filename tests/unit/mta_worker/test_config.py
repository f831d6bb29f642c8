"""mta_worker's lane and destination settings: defaults, and a bad value fails fast by name."""

from __future__ import annotations

import pytest

from libs.config import ConfigError
from services.mta_worker.config import WorkerConfig


def test_defaults() -> None:
    config = WorkerConfig.from_env({})
    assert (config.concurrency, config.retry_concurrency, config.slots_per_destination) == (32, 8, 16)


def test_settings_are_read() -> None:
    config = WorkerConfig.from_env(
        {"POSTWIRE_RETRY_CONCURRENCY": "3", "POSTWIRE_MAX_SLOTS_PER_DESTINATION": "5"}
    )
    assert (config.retry_concurrency, config.slots_per_destination) == (3, 5)


@pytest.mark.parametrize("name", ["POSTWIRE_RETRY_CONCURRENCY", "POSTWIRE_MAX_SLOTS_PER_DESTINATION"])
@pytest.mark.parametrize("value", ["0", "many"])
def test_a_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        WorkerConfig.from_env({name: value})

"""POSTWIRE_DB_POOL_MIN_SIZE / POSTWIRE_DB_POOL_MAX_SIZE: what every service's asyncpg pool opens."""

from __future__ import annotations

import pytest

from libs.config import CommonConfig, ConfigError
from services.policy.config import PolicyConfig
from services.submission.config import SubmissionConfig


def test_pools_keep_their_sizes_when_nothing_is_set() -> None:
    policy = PolicyConfig.from_env({}).common
    submission = SubmissionConfig.from_env({}).common
    assert (policy.db_pool_min_size, policy.db_pool_max_size) == (2, 10)
    assert (submission.db_pool_min_size, submission.db_pool_max_size) == (2, 20)


def test_pool_sizes_come_from_the_environment() -> None:
    env = {"POSTWIRE_DB_POOL_MIN_SIZE": "1", "POSTWIRE_DB_POOL_MAX_SIZE": "4"}
    common = SubmissionConfig.from_env(env).common
    assert (common.db_pool_min_size, common.db_pool_max_size) == (1, 4)


def test_a_maximum_below_the_default_minimum_lowers_the_minimum() -> None:
    common = CommonConfig.from_env({"POSTWIRE_DB_POOL_MAX_SIZE": "1"}, service="x", default_port=1)
    assert (common.db_pool_min_size, common.db_pool_max_size) == (1, 1)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"POSTWIRE_DB_POOL_MAX_SIZE": "0"}, "POSTWIRE_DB_POOL_MAX_SIZE"),
        ({"POSTWIRE_DB_POOL_MAX_SIZE": "ten"}, "POSTWIRE_DB_POOL_MAX_SIZE"),
        ({"POSTWIRE_DB_POOL_MIN_SIZE": "-1"}, "POSTWIRE_DB_POOL_MIN_SIZE"),
        ({"POSTWIRE_DB_POOL_MIN_SIZE": "5", "POSTWIRE_DB_POOL_MAX_SIZE": "4"}, "POSTWIRE_DB_POOL_MIN_SIZE"),
    ],
)
def test_a_bad_pool_size_stops_the_service_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        PolicyConfig.from_env(env)

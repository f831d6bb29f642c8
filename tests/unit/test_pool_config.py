"""POSTWIRE_DB_POOL_MIN_SIZE / POSTWIRE_DB_POOL_MAX_SIZE: what every service's asyncpg pool opens."""

from __future__ import annotations

import re
from pathlib import Path

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


def test_statement_cache_defaults_to_asyncpgs_and_zero_is_allowed_for_pgbouncer() -> None:
    assert CommonConfig.from_env({}, service="x", default_port=1).db_statement_cache_size == 100
    env = {"POSTWIRE_DB_STATEMENT_CACHE_SIZE": "0"}
    assert SubmissionConfig.from_env(env).common.db_statement_cache_size == 0


@pytest.mark.parametrize("raw", ["-1", "many"])
def test_a_bad_statement_cache_size_stops_the_service_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="POSTWIRE_DB_STATEMENT_CACHE_SIZE"):
        CommonConfig.from_env({"POSTWIRE_DB_STATEMENT_CACHE_SIZE": raw}, service="x", default_port=1)


# Pooled connections are released without asyncpg's reset query (libs.db._keep_session), so no
# statement may leave session state behind on one. Code that needs it opens its own connection.
_SESSION_STATE = re.compile(
    # The SQL in this codebase is upper case; prose quoting "set ..." is not SQL.
    r"""["'](?:SET\s(?!LOCAL)|RESET\s|LISTEN\s|DECLARE\s)|pg_(?:try_)?advisory_lock\(|set_config\([^)]*false"""
)
_OWN_CONNECTIONS = {"libs/db.py", "services/mta_worker/queue_watch.py"}


def test_no_pooled_statement_leaves_session_state() -> None:
    root = Path(__file__).resolve().parents[2]
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for folder in ("libs", "services")
        for path in sorted((root / folder).rglob("*.py"))
        if str(path.relative_to(root)) not in _OWN_CONNECTIONS
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _SESSION_STATE.search(line)
    ]
    assert offenders == []

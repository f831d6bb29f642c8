"""POSTWIRE_DB_POOL_MIN_SIZE / POSTWIRE_DB_POOL_MAX_SIZE reach the pool a running service opens:
what deploy/k8s sets per Deployment, and what the README's connection budget counts."""

from __future__ import annotations

import sys

import asyncpg

from libs.embedded.ports import free_port
from libs.embedded.process import ManagedProcess
from libs.embedded.suite import Suite
from libs.testing.polling import poll_until

APP = "postwire-pool-size-test"


async def _connections(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", APP
        )
        return count
    finally:
        await conn.close()


async def test_a_service_opens_the_pool_size_it_is_given(suite: Suite) -> None:
    assert suite.database_url
    env = suite.service_env("policy") | {
        "POSTWIRE_LISTEN": f"127.0.0.1:{free_port()}",
        # asyncpg passes unknown URL parameters on as server settings: this names the pool's
        # connections so they can be told from the suite's own policy.
        "POSTWIRE_DATABASE_URL": f"{suite.database_url}?application_name={APP}",
        # Neither the default minimum (2) nor maximum (10): the value must come from here.
        "POSTWIRE_DB_POOL_MIN_SIZE": "3",
        "POSTWIRE_DB_POOL_MAX_SIZE": "3",
    }
    proc = ManagedProcess(
        "policy-pool",
        [sys.executable, "-m", "services.policy"],
        env=env,
        log_path=suite.data_dir / "logs" / "policy-pool.log",
    )
    proc.spawn()
    try:
        proc.wait_ready(r"serving on", timeout=60)
        assert await _connections(suite.database_url) == 3
    finally:
        proc.stop(timeout=30)

    # A backend leaves pg_stat_activity when its process exits, a moment after the client's.
    async def closed() -> bool:
        return await _connections(suite.database_url) == 0

    await poll_until(closed, timeout=10, what="the service's connections to close")

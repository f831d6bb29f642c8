"""Outside POSTWIRE_ENV=dev a service will not start on a default secret or a dev-only setting.

The services are started as processes, the way a cluster starts them, and must exit non-zero
with one line naming the variable before they touch the network.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from libs.dev_switch import DEV_ONLY_SETTINGS
from libs.embedded.ports import free_port
from libs.embedded.process import ManagedProcess
from services.policy.config import DEV_PEPPER, DEV_SECRET_KEY

# What a production deployment gives each service: real secrets, no POSTWIRE_ENV. The database
# and NATS addresses point at closed ports: a refused service must exit before using them.
PRODUCTION = {
    "POSTWIRE_API_KEY_PEPPER": "a-real-pepper-" + "x" * 32,
    "POSTWIRE_SECRET_KEY": "a-real-secret-key-" + "y" * 32,
    "POSTWIRE_INTERNAL_TOKEN": "a-real-internal-token-" + "z" * 32,
    "POSTWIRE_DATABASE_URL": "postgresql://postwire@127.0.0.1:9/postwire",
    "POSTWIRE_NATS_URL": "nats://127.0.0.1:9",
}
REPO = Path(__file__).resolve().parents[2]


def _start(service: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        env={"PATH": "/usr/bin:/bin", "POSTWIRE_LISTEN": f"127.0.0.1:{free_port()}", **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


def _refused(result: subprocess.CompletedProcess[str], variable: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert variable in lines[0] and "POSTWIRE_ENV=dev" in lines[0], lines[0]


@pytest.mark.parametrize(
    ("service", "variable", "value"),
    [
        ("policy", "POSTWIRE_API_KEY_PEPPER", DEV_PEPPER),
        ("policy", "POSTWIRE_API_KEY_PEPPER", ""),
        ("policy", "POSTWIRE_SECRET_KEY", DEV_SECRET_KEY),
        ("policy", "POSTWIRE_INTERNAL_TOKEN", ""),
        ("template", "POSTWIRE_INTERNAL_TOKEN", ""),
        ("submission", "POSTWIRE_INTERNAL_TOKEN", ""),
        ("router", "POSTWIRE_INTERNAL_TOKEN", ""),
        ("events", "POSTWIRE_INTERNAL_TOKEN", ""),
        # mta_worker opens the DKIM keys policy sealed.
        ("mta_worker", "POSTWIRE_SECRET_KEY", DEV_SECRET_KEY),
        ("mta_worker", "POSTWIRE_SECRET_KEY", ""),
    ],
)
def test_a_default_or_empty_secret_is_refused_outside_dev(service: str, variable: str, value: str) -> None:
    result = _start(service, PRODUCTION | {variable: value})
    _refused(result, variable)
    # The line names the variable, never a secret's value.
    for secret in (PRODUCTION["POSTWIRE_API_KEY_PEPPER"], PRODUCTION["POSTWIRE_SECRET_KEY"], DEV_PEPPER):
        assert secret not in result.stderr


@pytest.mark.parametrize("service", ["policy", "edge", "mta_worker"])
def test_dev_from_domains_is_refused_outside_dev(service: str) -> None:
    _refused(
        _start(service, PRODUCTION | {"POSTWIRE_DEV_FROM_DOMAINS": "example.com"}),
        "POSTWIRE_DEV_FROM_DOMAINS",
    )


def test_every_offending_variable_is_named_in_the_one_line() -> None:
    result = _start("policy", {"POSTWIRE_DEV_FROM_DOMAINS": "example.com"})
    _refused(result, "POSTWIRE_DEV_FROM_DOMAINS")
    for variable in ("POSTWIRE_API_KEY_PEPPER", "POSTWIRE_SECRET_KEY", "POSTWIRE_INTERNAL_TOKEN"):
        assert variable in result.stderr


async def test_real_secrets_start_without_the_dev_switch(suite, tmp_path: Path) -> None:
    env = suite.service_env("policy")
    # The suite's env carries dev-only allowances (POSTWIRE_WEBHOOK_ALLOW_PRIVATE...): drop them all.
    for dev_only in ("POSTWIRE_ENV", *DEV_ONLY_SETTINGS):
        env.pop(dev_only, None)
    env |= {
        k: v for k, v in PRODUCTION.items() if k not in ("POSTWIRE_DATABASE_URL", "POSTWIRE_NATS_URL")
    } | {"POSTWIRE_LISTEN": f"127.0.0.1:{free_port()}"}
    proc = ManagedProcess(
        "policy-production",
        [sys.executable, "-m", "services.policy"],
        env=env,
        log_path=tmp_path / "policy.log",
    )
    proc.spawn()
    try:
        await asyncio.to_thread(proc.wait_ready, r"serving on", timeout=60)
    finally:
        await asyncio.to_thread(proc.stop, timeout=30)

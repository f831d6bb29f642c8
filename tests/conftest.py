"""Session fixtures: real NATS, PostgreSQL and SMTP on loopback, and the services as processes.

POSTWIRE_NATS_URL / POSTWIRE_DATABASE_URL switch to existing servers instead of embedded ones.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from libs.capture import SmtpSink
from libs.embedded.suite import Suite, SuitePorts
from libs.testing.dns_server import LoopbackDns
from libs.testing.otlp_receiver import OtlpReceiver
from libs.testing.suites import stop_suite
from libs.token_keys import generate_token_keys
from services.mta_worker.smtp_session import Timeouts
from services.policy.api_keys import KNOWN_SCOPES

ADMIN_TOKEN = "pwadmin_test_" + uuid.uuid4().hex
# A fresh ring per session, so no test can pass by relying on the dev key ring.
TOKEN_KEYS = generate_token_keys("test")
# What the services present to each other on postwire.internal.v1 calls.
INTERNAL_TOKEN = "pwinternal_test_" + uuid.uuid4().hex

# Short timings so retries, sweeps and span exports happen within a test's patience.
TEST_ENV = {
    "POSTWIRE_RETRY_BASE_SECONDS": "1",
    "POSTWIRE_RETRY_MAX_SECONDS": "2",
    "POSTWIRE_SWEEP_INTERVAL_SECONDS": "0.3",
    "POSTWIRE_STALL_SECONDS": "3",
    # Longer than the 2 s default: tests check what other calls get while a runaway render is
    # still running, and on a busy machine those calls took most of 2 s.
    "POSTWIRE_RENDER_TIME_LIMIT_SECONDS": "4",
    "POSTWIRE_SHUTDOWN_GRACE_SECONDS": "3",
    # Short AckWait (and so lease) makes recovery after a killed worker quick enough to test.
    "POSTWIRE_ACK_WAIT_SECONDS": "6",
    "OTEL_EXPORTER_OTLP_INSECURE": "true",
    "OTEL_BSP_SCHEDULE_DELAY": "200",
    "POSTWIRE_LOG_LEVEL": "INFO",
    "POSTWIRE_ADMIN_TOKEN": ADMIN_TOKEN,
    "POSTWIRE_TOKEN_KEYS": TOKEN_KEYS,
    "POSTWIRE_INTERNAL_TOKEN": INTERNAL_TOKEN,
    # The dev switch: lets the pepper and secret key keep their defaults, and allows the
    # dev-only settings below.
    "POSTWIRE_ENV": "dev",
    # Revocations and limit changes reach every replica within this; short, so tests need not wait.
    "POSTWIRE_KEY_CACHE_SECONDS": "1",
    # Tests send from example.com without registering it; every other From domain is checked.
    "POSTWIRE_DEV_FROM_DOMAINS": "example.com",
    # Webhooks: the suite's receivers listen on loopback over plain http (only 127.0.0.0/8 is
    # allowed, so a 10.x endpoint is still refused); retries 1 s apart, 4 attempts, 2 s time-out.
    "POSTWIRE_WEBHOOK_ALLOW_PRIVATE": "127.0.0.0/8",
    "POSTWIRE_WEBHOOK_RETRY_SCHEDULE": "1,1,1",
    "POSTWIRE_WEBHOOK_TIMEOUT_SECONDS": "2",
    # Every SMTP phase times out after 10 s (not Postfix's minutes), for the slow-server tests.
    **Timeouts.env_all(10),
}


TESTS = Path(__file__).resolve().parent
# Modules (or packages) that take longest, longest first: under xdist they start first, so no
# worker is left running one alone at the end. Measured with --durations (session 8); a module
# missing here only starts in collection order.
SLOW_FIRST = (
    "integration/test_chaos_smoke.py",  # its own suite, nine faults in a row: ~80 s
    "integration/test_bounded_retries.py",  # its own suite and bus behind proxies, outages: ~80 s
    "integration/delivery",  # the MX suite, TLS and relay sinks: ~40 s
    "integration/test_wheel_install.py",  # builds and installs a wheel, runs every service: ~35 s
    "integration/test_retry_lane.py",  # a tarpit holding 40 replies 8 s each: ~35 s
    "integration/test_duplicate_window.py",  # a kill, then a lease's worth of not redelivering: ~28 s
    "integration/test_lifecycle.py",
    "integration/test_pipeline_faults.py",
    "integration/test_metrics.py",
    "integration/test_webhooks.py",
    "integration/test_worker_shutdown.py",
    "integration/test_event_stream.py",
    "integration/test_readiness.py",
    "integration/test_dependency_down.py",
)


def work_unit(path: str) -> str:
    """The unit one worker runs whole, for a test file's path relative to tests/: the file, or
    the delivery package (it shares one MX suite)."""
    return "integration/delivery" if path.startswith("integration/delivery/") else path


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slowest work units first (a stable sort: each module keeps its own order)."""
    rank = {unit: i for i, unit in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(work_unit(item.path.relative_to(TESTS).as_posix()), len(rank)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under `pytest -n N` (make test): a work unit runs whole on one worker, so module fixtures
    (a fault test's own suite, own PostgreSQL) and the delivery package's MX suite start once, and
    units go out in collection order, slowest first. (xdist's own `--dist loadgroup` would do the
    grouping with markers, but with pytest 9 its renamed node ids are ignored and every test is
    scheduled alone.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid.split("::", 1)[0].removeprefix("tests/"))

    # Keep collection order: xdist would otherwise start the units with the most tests first.
    config.option.loadscopereorder = False
    return ByWorkUnit(config, log)


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="postwire-test-"))
    yield path
    # POSTWIRE_KEEP_TEST_DATA=1 keeps the services' logs for a post-mortem.
    if not os.environ.get("POSTWIRE_KEEP_TEST_DATA"):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def smtp_sink(data_dir: Path) -> Iterator[SmtpSink]:
    with SmtpSink("127.0.0.1", 0, scripted=True) as sink:
        yield sink


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def dns() -> Iterator[LoopbackDns]:
    """The resolver the policy service asks when verifying domains; tests publish records here."""
    server = LoopbackDns()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def suite(data_dir: Path, smtp_sink: SmtpSink, otlp: OtlpReceiver, dns: LoopbackDns) -> Iterator[Suite]:
    env = dict(
        TEST_ENV,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{otlp.port}",
        POSTWIRE_DNS_RESOLVER=dns.address,
        POSTWIRE_DNS_TIMEOUT_SECONDS="2",
    )
    suite = Suite(
        data_dir=data_dir,
        ports=SuitePorts.free(),
        smarthost=f"127.0.0.1:{smtp_sink.port}",
        # The capture sink offers no STARTTLS.
        smarthost_tls="none",
        nats_url=os.environ.get("POSTWIRE_NATS_URL"),
        database_url=os.environ.get("POSTWIRE_DATABASE_URL"),
        extra_env=env,
    )
    try:
        suite.start_infrastructure()
        suite.start_services()
        yield suite
    finally:
        stop_suite(suite)


@dataclass
class Tenant:
    id: str
    api_key: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)


INTERNAL_AUTH = (("authorization", f"Bearer {INTERNAL_TOKEN}"),)


async def create_tenant(suite: Suite, name: str = "") -> Tenant:
    """A tenant and a key with every scope, made the way an operator does: AdminService at the edge."""
    from postwire.v1 import admin_service_pb2, admin_service_pb2_grpc

    admin = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    async with grpc.aio.insecure_channel(suite.ports.addr("edge")) as channel:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        made = await stub.CreateTenant(
            admin_service_pb2.CreateTenantRequest(tenant={"name": name or f"t-{uuid.uuid4().hex[:8]}"}),
            metadata=admin,
            timeout=10,
        )
        key = await stub.CreateApiKey(
            admin_service_pb2.CreateApiKeyRequest(tenant_id=made.tenant.id, scopes=KNOWN_SCOPES),
            metadata=admin,
            timeout=10,
        )
    return Tenant(made.tenant.id, key.secret)


@pytest.fixture
async def tenant(suite: Suite) -> Tenant:
    return await create_tenant(suite)


@pytest.fixture
async def edge(suite: Suite) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(suite.ports.addr("edge")) as channel:
        yield channel

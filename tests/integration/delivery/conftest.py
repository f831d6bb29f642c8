"""A second suite, in MX mode, for the delivery tests: its own NATS and database, the session's
loopback DNS as resolver, and scripted SMTP servers on 127.0.0.2… as the MX hosts, all on one port.

It runs beside the main suite (which keeps delivering to the capture sink) the way the fault tests'
suites do: a fresh database on the main suite's PostgreSQL and a NATS of its own, so nothing sent
here can reach the capture sink and nothing in the main suite sees these tenants.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from libs.embedded.nats_server import start_nats
from libs.embedded.ports import free_port_on
from libs.embedded.suite import Suite, SuitePorts
from libs.testing.dns_server import LoopbackDns
from libs.testing.smtp_servers import ScriptedSmtpServer
from libs.testing.suites import stop_suite
from libs.testing.test_ca import TestCa
from tests.conftest import TEST_ENV, Tenant, create_tenant
from tests.integration.helpers import create_database

# Addresses the MX records in these tests may name; every one is free on `mx_port`. Not 127.0.0.1,
# where the suites' own servers take ports.
MX_HOSTS = tuple(f"127.0.0.{n}" for n in range(2, 10))
# The envelope sender's domain for From domains that are not verified.
RETURN_PATH_HOST = "bounces.test.example"
# Delivery to this domain needs a verified certificate (POSTWIRE_TLS_REQUIRED_DOMAINS).
TLS_REQUIRED_DOMAIN = "required.test.example"


@pytest.fixture(scope="session")
def mx_port() -> int:
    """The one port every MX host listens on (POSTWIRE_MX_PORT)."""
    return free_port_on(MX_HOSTS)


@pytest.fixture(scope="session")
def trusted_ca() -> TestCa:
    """The CA the MX suite trusts (POSTWIRE_MX_CA_FILE); certificates for sinks that should verify."""
    return TestCa("Postwire trusted test CA")


@pytest.fixture(scope="session")
def untrusted_ca() -> TestCa:
    """A CA nobody trusts: a sink presenting its certificate must fail verification."""
    return TestCa("Postwire untrusted test CA")


@pytest.fixture(scope="session")
def mx_ca_file(data_dir: Path, trusted_ca: TestCa) -> Path:
    return trusted_ca.ca_file(data_dir / "mx-ca")


@pytest.fixture(scope="session")
def mx_suite(
    suite: Suite, dns: LoopbackDns, data_dir: Path, mx_port: int, mx_ca_file: Path
) -> Iterator[Suite]:
    assert suite.database_url
    own_dir = data_dir / "mx-suite"
    database_url = create_database(suite.database_url, "postwire_mx")
    nats_proc, nats_url = start_nats(own_dir / "nats")
    env = dict(
        TEST_ENV,
        POSTWIRE_DELIVERY_MODE="mx",
        POSTWIRE_MX_PORT=str(mx_port),
        POSTWIRE_MX_ALLOW_PRIVATE="127.0.0.0/8",
        POSTWIRE_DNS_RESOLVER=dns.address,
        POSTWIRE_DNS_TIMEOUT_SECONDS="2",
        POSTWIRE_RETURN_PATH_HOST=RETURN_PATH_HOST,
        POSTWIRE_TLS_REQUIRED_DOMAINS=TLS_REQUIRED_DOMAIN,
        POSTWIRE_MX_CA_FILE=str(mx_ca_file),
    )
    # No OTEL endpoint: this suite's spans would otherwise mix into the main suite's receiver.
    own = Suite(
        data_dir=own_dir,
        ports=SuitePorts.free(),
        smarthost=None,
        nats_url=nats_url,
        database_url=database_url,
        extra_env=env,
    )
    try:
        own.start_infrastructure()
        own.start_services()
        yield own
    finally:
        stop_suite(own)
        nats_proc.stop(timeout=10)


@pytest.fixture
async def mx_tenant(mx_suite: Suite) -> Tenant:
    return await create_tenant(mx_suite)


@pytest.fixture
async def mx_edge(mx_suite: Suite) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(mx_suite.ports.addr("edge")) as channel:
        yield channel


@pytest.fixture
def mx_servers(mx_port: int) -> Iterator[Callable[..., ScriptedSmtpServer]]:
    """Start a scripted MX host: `mx_servers("127.0.0.2", starttls=..., rcpt_replies=...)` binds
    that address on `mx_port`; every one started is closed after the test."""
    started: list[ScriptedSmtpServer] = []

    def start(host: str, /, **options: Any) -> ScriptedSmtpServer:
        server = ScriptedSmtpServer(host=host, port=mx_port, **options).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.close()

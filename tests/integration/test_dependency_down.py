"""A dependency that is down answers UNAVAILABLE with RetryInfo, never INTERNAL or UNKNOWN, and
the services recover by themselves once it is back.

These tests run their own copy of the API-facing services, with PostgreSQL and NATS reached
through fault proxies, so an outage here cannot disturb the rest of the suite.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from postwire.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    domain_service_pb2,
    domain_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    mail_service_pb2,
    mail_service_pb2_grpc,
    suppression_service_pb2,
    suppression_service_pb2_grpc,
    template_service_pb2,
    template_service_pb2_grpc,
)

from libs.capture import SmtpSink
from libs.embedded.nats_server import start_nats
from libs.embedded.suite import Suite, SuitePorts
from libs.grpcx.status import retry_delay
from libs.testing.polling import poll_until
from libs.testing.suites import stop_suite
from libs.testing.tcp_proxy import TcpProxy
from tests.conftest import ADMIN_TOKEN, TEST_ENV, Tenant, create_tenant
from tests.integration.helpers import create_database, host_port, mail

API_SERVICES = ("policy", "template", "events", "submission", "edge")
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Faults:
    suite: Suite
    database: TcpProxy
    bus: TcpProxy
    direct_database_url: str


@pytest.fixture(scope="module")
def faults(suite: Suite, smtp_sink: SmtpSink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    data_dir: Path = tmp_path_factory.mktemp("faults")
    assert suite.database_url
    direct = create_database(suite.database_url, "postwire_faults")
    nats_proc, nats_url = start_nats(data_dir / "nats")
    database = TcpProxy(*host_port(direct)).start()
    bus = TcpProxy(*host_port(nats_url)).start()
    faulty = Suite(
        data_dir=data_dir,
        ports=SuitePorts.free(),
        smarthost=f"127.0.0.1:{smtp_sink.port}",
        smarthost_tls="none",
        nats_url=bus.url_for(nats_url),
        database_url=database.url_for(direct),
        extra_env=dict(TEST_ENV),
    )
    try:
        faulty.start_infrastructure()
        faulty.start_services(API_SERVICES)
        yield Faults(faulty, database, bus, direct)
    finally:
        database.up()
        bus.up()
        stop_suite(faulty)
        database.stop()
        bus.stop()
        nats_proc.stop(timeout=10)


@pytest.fixture
async def api(faults: Faults) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(faults.suite.ports.addr("edge")) as channel:
        yield channel


def _calls(api: grpc.aio.Channel, tenant: Tenant, message_id: str) -> dict[str, Callable[[], Awaitable[Any]]]:
    """Every public call that must reach PostgreSQL to answer."""
    mail_stub = mail_service_pb2_grpc.MailServiceStub(api)
    templates = template_service_pb2_grpc.TemplateServiceStub(api)
    events = event_service_pb2_grpc.EventServiceStub(api)
    admin = admin_service_pb2_grpc.AdminServiceStub(api)
    suppressions = suppression_service_pb2_grpc.SuppressionServiceStub(api)
    domains = domain_service_pb2_grpc.DomainServiceStub(api)
    auth = tenant.metadata
    return {
        "SendEmail": lambda: mail_stub.SendEmail(mail(idempotency_key=uuid.uuid4().hex), metadata=auth),
        "GetMessage": lambda: mail_stub.GetMessage(
            mail_service_pb2.GetMessageRequest(message_id=message_id), metadata=auth
        ),
        "ListEvents": lambda: events.ListEvents(event_service_pb2.ListEventsRequest(), metadata=auth),
        "ListTemplates": lambda: templates.ListTemplates(
            template_service_pb2.ListTemplatesRequest(), metadata=auth
        ),
        "CreateTemplate": lambda: templates.CreateTemplate(
            template_service_pb2.CreateTemplateRequest(
                template={"name": f"t-{uuid.uuid4().hex[:8]}", "subject": "s", "text_body": "b"}
            ),
            metadata=auth,
        ),
        "ListSuppressions": lambda: suppressions.ListSuppressions(
            suppression_service_pb2.ListSuppressionsRequest(), metadata=auth
        ),
        "ListDomains": lambda: domains.ListDomains(domain_service_pb2.ListDomainsRequest(), metadata=auth),
        "ListTenants": lambda: admin.ListTenants(admin_service_pb2.ListTenantsRequest(), metadata=ADMIN),
    }


async def _outcome(call: Callable[[], Awaitable[Any]]) -> grpc.aio.AioRpcError | None:
    try:
        await call()
    except grpc.aio.AioRpcError as exc:
        return exc
    return None


async def _all_succeed(calls: dict[str, Callable[[], Awaitable[Any]]]) -> bool:
    for call in calls.values():
        if await _outcome(call) is not None:
            return False
    return True


async def test_calls_answer_unavailable_while_the_database_is_down_and_recover(
    faults: Faults, api: grpc.aio.Channel
) -> None:
    tenant = await create_tenant(faults.suite)
    sent = await mail_service_pb2_grpc.MailServiceStub(api).SendEmail(mail(), metadata=tenant.metadata)
    calls = _calls(api, tenant, sent.message_id)
    assert await _all_succeed(calls)

    faults.database.down()
    try:
        for name, call in calls.items():
            error = await _outcome(call)
            assert error is not None, f"{name} answered OK without its database"
            assert error.code() == grpc.StatusCode.UNAVAILABLE, (name, error.code(), error.details())
            assert retry_delay(error) is not None, f"{name}: UNAVAILABLE without RetryInfo"
            assert "Traceback" not in (error.details() or "")
    finally:
        faults.database.up()

    # Pools heal on their own: every call works again within seconds, no restart.
    await poll_until(lambda: _all_succeed(calls), timeout=20, what="every call to succeed after the outage")


async def test_connections_killed_by_the_server_are_unavailable_never_internal(
    faults: Faults, api: grpc.aio.Channel
) -> None:
    """The server ends every connection (as in a restart: 57P01 admin shutdown); calls in flight
    and just after may fail, but only with UNAVAILABLE."""
    tenant = await create_tenant(faults.suite)
    sent = await mail_service_pb2_grpc.MailServiceStub(api).SendEmail(mail(), metadata=tenant.metadata)
    calls = _calls(api, tenant, sent.message_id)
    name = faults.direct_database_url.rpartition("/")[2]
    admin_conn = await asyncpg.connect(faults.direct_database_url.rpartition("/")[0] + "/postgres")
    try:
        for _ in range(3):
            in_flight = [asyncio.ensure_future(_outcome(call)) for call in calls.values() for _ in range(3)]
            await admin_conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            after = [await _outcome(call) for call in calls.values()]
            outcomes = [*(await asyncio.gather(*in_flight)), *after]
            bad = [(e.code(), e.details()) for e in outcomes if e is not None and e.code() in NEVER]
            assert not bad, bad
            assert all(e is None or e.code() == grpc.StatusCode.UNAVAILABLE for e in outcomes)
    finally:
        await admin_conn.close()
    await poll_until(lambda: _all_succeed(calls), timeout=20, what="every call to succeed after the kills")


async def test_live_tail_answers_unavailable_while_the_bus_is_down(
    faults: Faults, api: grpc.aio.Channel
) -> None:
    tenant = await create_tenant(faults.suite)
    events = event_service_pb2_grpc.EventServiceStub(api)
    faults.bus.down()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in events.StreamEvents(
                event_service_pb2.StreamEventsRequest(), metadata=tenant.metadata, timeout=15
            ):
                pass
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, (
            caught.value.code(),
            caught.value.details(),
        )
        assert retry_delay(caught.value) is not None
        # Sends still succeed: the commit is what makes them durable, the publish is swept later.
        sent = await mail_service_pb2_grpc.MailServiceStub(api).SendEmail(mail(), metadata=tenant.metadata)
        assert sent.message_id
    finally:
        faults.bus.up()


async def _health(faults: Faults, service: str, name: str) -> int:
    async with grpc.aio.insecure_channel(faults.suite.ports.addr(service)) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=name), timeout=5
        )
    return answer.status


async def _readiness(faults: Faults) -> dict[str, int]:
    return {service: await _health(faults, service, "readiness") for service in API_SERVICES}


async def _liveness_all_serving(faults: Faults) -> None:
    for service in API_SERVICES:
        assert await _health(faults, service, "") == SERVING, f"{service} liveness followed a dependency"


async def _all_ready(faults: Faults) -> bool:
    return await _readiness(faults) == dict.fromkeys(API_SERVICES, SERVING)


async def test_readiness_drops_while_the_database_is_down_and_liveness_never(faults: Faults) -> None:
    # (An earlier test may have just ended an outage: readiness follows within one interval.)
    await poll_until(lambda: _all_ready(faults), timeout=10, what="every service ready")
    faults.database.down()
    try:
        # Every service with a pool is out of rotation; the edge's readiness is its own listener.
        expected = {**dict.fromkeys(API_SERVICES, NOT_SERVING), "edge": SERVING}

        async def dropped() -> bool:
            return await _readiness(faults) == expected

        await poll_until(dropped, timeout=10, what=f"readiness {expected}")
        await _liveness_all_serving(faults)
    finally:
        faults.database.up()

    await poll_until(lambda: _all_ready(faults), timeout=15, what="readiness SERVING after the outage")
    await _liveness_all_serving(faults)


async def test_readiness_follows_nats_only_where_the_work_needs_it(faults: Faults) -> None:
    await poll_until(lambda: _all_ready(faults), timeout=10, what="every service ready")
    faults.bus.down()
    try:

        async def events_dropped() -> bool:
            return await _health(faults, "events", "readiness") == NOT_SERVING

        await poll_until(events_dropped, timeout=10, what="events readiness NOT_SERVING without NATS")
        # Submission keeps accepting through a NATS outage (the outbox publishes later), so it
        # stays in rotation; the others never use NATS.
        assert await _readiness(faults) == {**dict.fromkeys(API_SERVICES, SERVING), "events": NOT_SERVING}
        await _liveness_all_serving(faults)
    finally:
        faults.bus.up()

    async def events_back() -> bool:
        return await _health(faults, "events", "readiness") == SERVING

    await poll_until(events_back, timeout=20, what="events readiness SERVING once NATS is back")

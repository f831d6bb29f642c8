"""/metrics over a real run: mail through every service, then a scrape of each service shows the
counters moved by exactly what was sent, and every series the alert rules and the dashboard name.

The services run in a suite of their own (own NATS, a fresh database on the shared PostgreSQL),
so no other test's traffic moves these counters.
"""

from __future__ import annotations

import asyncio
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import grpc
import pytest
from postwire.v1 import event_pb2, mail_service_pb2_grpc, webhook_service_pb2_grpc
from postwire.v1 import webhook_service_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families

from libs.capture import SmtpSink
from libs.embedded.nats_server import start_nats
from libs.embedded.ports import free_port
from libs.embedded.process import ManagedProcess
from libs.embedded.suite import SERVICES, Suite, SuitePorts
from libs.testing.polling import poll_until
from libs.testing.suites import stop_suite
from libs.testing.webhook_receiver import Reply, WebhookReceiver
from services.events.event_metrics import category_name
from services.mta_worker.queue_watch import CONSUMERS
from tests.conftest import TEST_ENV, Tenant, create_tenant
from tests.integration.helpers import create_database, mail, unique, wait_for_events
from tests.integration.table_lock import while_locked
from tests.unit.test_metrics_table import dashboard_expressions, metric_names_in, rule_expressions

ACCEPTED = event_pb2.EVENT_TYPE_ACCEPTED
DELIVERED = event_pb2.EVENT_TYPE_DELIVERED
DEFERRED = event_pb2.EVENT_TYPE_DEFERRED
BOUNCED = event_pb2.EVENT_TYPE_BOUNCED
SEND_EMAIL = {"rpc_service": "postwire.v1.MailService", "rpc_method": "SendEmail"}

# (series name, labels) -> value; the exporter's otel_scope_* labels are left out.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def metered(suite: Suite, smtp_sink: SmtpSink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    data_dir: Path = tmp_path_factory.mktemp("metrics")
    assert suite.database_url
    nats_proc, nats_url = start_nats(data_dir / "nats")
    own = Suite(
        data_dir=data_dir,
        ports=SuitePorts.free(),
        smarthost=f"127.0.0.1:{smtp_sink.port}",
        smarthost_tls="none",
        nats_url=nats_url,
        database_url=create_database(suite.database_url, "postwire_metrics"),
        extra_env=TEST_ENV,
        metrics_ports={name: free_port() for name in SERVICES},
    )
    try:
        own.start_infrastructure()
        own.start_services()
        yield own
    finally:
        stop_suite(own)
        nats_proc.stop(timeout=10)


@pytest.fixture
async def api(metered: Suite) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(metered.ports.addr("edge")) as channel:
        yield channel


def _scrape_sync(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if not k.startswith("otel_scope_"))
            samples[(sample.name, labels)] = sample.value
    return samples


async def scrape(suite: Suite, service: str) -> Samples:
    return await asyncio.to_thread(_scrape_sync, suite.metrics_ports[service])


def value(samples: Samples, name: str, **labels: str | int) -> float:
    """The sum of `name` over every series carrying `labels` (others may differ)."""
    wanted = {(k, str(v)) for k, v in labels.items()}
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def families(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


async def moved(
    suite: Suite, service: str, before: Samples, expected: Mapping[tuple[str, frozenset[tuple[str, str]]], float]
) -> Samples:
    """Wait until every expected delta is reached, then return the scrape (the caller checks it
    did not overshoot); on time-out the message shows every delta as it stood."""
    deltas: dict[str, float] = {}

    async def probe() -> Samples | None:
        now = await scrape(suite, service)
        deltas.clear()
        for (name, labels), _ in expected.items():
            deltas[f"{name}{dict(labels)}"] = value(now, name, **dict(labels)) - value(before, name, **dict(labels))
        reached = all(deltas[f"{n}{dict(ls)}"] >= want for (n, ls), want in expected.items())
        return now if reached else None

    try:
        found = await poll_until(probe, timeout=60, what=f"{service}'s counters to move")
    except AssertionError:
        raise AssertionError(f"{service}: deltas {deltas}, expected {expected}") from None
    assert found is not None
    return found


def key(name: str, **labels: str | int) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset((k, str(v)) for k, v in labels.items())


async def test_scraped_counters_move_by_what_was_sent(metered: Suite, api: grpc.aio.Channel) -> None:
    tenant: Tenant = await create_tenant(metered)
    mail_stub = mail_service_pb2_grpc.MailServiceStub(api)
    hooks = webhook_service_pb2_grpc.WebhookServiceStub(api)
    with WebhookReceiver() as receiver:
        ok_path, gone_path = f"/ok-{uuid.uuid4().hex[:6]}", f"/gone-{uuid.uuid4().hex[:6]}"
        # One 503 (failed, retried) then 200s; the other endpoint answers 410 and is disabled.
        receiver.script(ok_path, Reply(503))
        receiver.script(gone_path, Reply(410))
        for path, types in ((ok_path, [DELIVERED]), (gone_path, [BOUNCED])):
            await hooks.CreateWebhook(
                pb.CreateWebhookRequest(webhook=pb.Webhook(url=receiver.url(path), event_types=types)),
                metadata=tenant.metadata,
            )

        before = {service: await scrape(metered, service) for service in SERVICES}

        # 3 plain messages, one to a recipient that bounces (and one that gets it), one whose
        # first attempt is cut off (deferred, then delivered by a retry): 6 recipients accepted,
        # 5 delivered, 1 bounced, 1 deferral.
        plain = [
            await mail_stub.SendEmail(mail(to=[{"address": unique()}]), metadata=tenant.metadata)
            for _ in range(3)
        ]
        bouncing = await mail_stub.SendEmail(
            mail(to=[{"address": unique("permfail")}, {"address": unique()}]), metadata=tenant.metadata
        )
        retried = await mail_stub.SendEmail(mail(to=[{"address": unique("disconnect")}]), metadata=tenant.metadata)
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await mail_stub.SendEmail(mail(to=[{"address": "not an address"}]), metadata=tenant.metadata)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        for answer in plain:
            await wait_for_events(api, tenant.metadata, answer.message_id, [ACCEPTED, DELIVERED])
        bounce_events = await wait_for_events(
            api, tenant.metadata, bouncing.message_id, [ACCEPTED, ACCEPTED, BOUNCED, DELIVERED]
        )
        retry_events = await wait_for_events(
            api, tenant.metadata, retried.message_id, [ACCEPTED, DEFERRED, DELIVERED], timeout=40
        )
        (bounce,) = [e for e in bounce_events if e.type == BOUNCED]
        (deferral,) = [e for e in retry_events if e.type == DEFERRED]
        bounce_category = category_name(bounce.bounce_category)
        deferral_category = category_name(deferral.bounce_category)
        # Five DELIVERED events, one of them tried twice (503, then 200).
        await receiver.wait_for(6, path=ok_path, timeout=30)
        await receiver.wait_for(1, path=gone_path, timeout=30)

        # events: each outcome once, whichever service produced it.
        expected_events = {
            key("postwire_messages_accepted_total"): 6,
            key("postwire_messages_delivered_total"): 5,
            key("postwire_messages_bounced_total", postwire_bounce_category=bounce_category): 1,
            key("postwire_messages_deferred_total", postwire_bounce_category=deferral_category): 1,
            key("postwire_messages_failed_total"): 0,
            key("postwire_messages_expired_total"): 0,
            key("postwire_webhook_deliveries_total", postwire_webhook_outcome="delivered"): 5,
            key("postwire_webhook_deliveries_total", postwire_webhook_outcome="failed"): 2,
            key("postwire_webhook_endpoints_disabled_total"): 1,
        }
        # edge and submission each answer SendEmail: 5 OK, 1 INVALID_ARGUMENT (code 3); the edge's
        # forwarding calls are its client calls.
        expected_rpc = {
            key("rpc_server_duration_milliseconds_count", **SEND_EMAIL, rpc_grpc_status_code=0): 5,
            key("rpc_server_duration_milliseconds_count", **SEND_EMAIL, rpc_grpc_status_code=3): 1,
        }
        expected_edge_client = {
            key("rpc_client_duration_milliseconds_count", **SEND_EMAIL, rpc_grpc_status_code=0): 5,
            key("rpc_client_duration_milliseconds_count", **SEND_EMAIL, rpc_grpc_status_code=3): 1,
        }
        expected_smtp = {
            key("postwire_smtp_attempt_duration_milliseconds_count", postwire_smtp_phase="transaction",
                postwire_smtp_outcome="delivered"): 5,
            key("postwire_smtp_attempt_duration_milliseconds_count", postwire_smtp_phase="transaction",
                postwire_smtp_outcome="bounced"): 1,
        }
        after = {
            "events": await moved(metered, "events", before["events"], expected_events),
            "submission": await moved(metered, "submission", before["submission"], expected_rpc),
            "edge": await moved(metered, "edge", before["edge"], {**expected_rpc, **expected_edge_client}),
            "mta_worker": await moved(metered, "mta_worker", before["mta_worker"], expected_smtp),
        }
        for service, expected in (
            ("events", expected_events),
            ("submission", expected_rpc),
            ("edge", {**expected_rpc, **expected_edge_client}),
            ("mta_worker", expected_smtp),
        ):
            for (name, labels), delta in expected.items():
                got = value(after[service], name, **dict(labels)) - value(before[service], name, **dict(labels))
                assert got == delta, f"{service}: {name}{dict(labels)} moved by {got}, expected {delta}"

    # The cut-off first attempt: a transaction that broke or was deferred, never delivered twice.
    mta = after["mta_worker"]
    cut = sum(
        value(mta, "postwire_smtp_attempt_duration_milliseconds_count", postwire_smtp_phase="transaction",
              postwire_smtp_outcome=outcome)
        - value(before["mta_worker"], "postwire_smtp_attempt_duration_milliseconds_count",
                postwire_smtp_phase="transaction", postwire_smtp_outcome=outcome)
        for outcome in ("broken", "deferred")
    )
    assert cut == 1
    assert value(mta, "postwire_smtp_attempt_duration_milliseconds_count", postwire_smtp_phase="session",
                 postwire_smtp_outcome="ok") >= 1
    # The retry went out through the retry scheduler (a sweeper re-publish).
    assert value(mta, "postwire_sweeper_republished_total", postwire_sweeper="retry-scheduler") >= 1
    # Submission's calls to policy are counted as client calls, all OK.
    submission = after["submission"]
    assert value(submission, "rpc_client_duration_milliseconds_count",
                 rpc_service="postwire.internal.v1.PolicyService", rpc_grpc_status_code=0) >= 5

    # Every series an alert rule or a dashboard panel names is in a live scrape.
    scraped = {service: await scrape(metered, service) for service in SERVICES}
    live = set().union(*(families(samples) for samples in scraped.values()))
    named = set().union(*(metric_names_in(expr) for expr in rule_expressions() + dashboard_expressions()))
    assert named <= live, f"named by the rules or dashboard but never scraped: {sorted(named - live)}"


def _consumer_gauges(samples: Samples) -> set[tuple[str, str]]:
    return {
        (dict(ls)["messaging_destination_name"], dict(ls)["messaging_consumer_group_name"])
        for name, ls in samples
        if name == "postwire_jetstream_consumer_pending"
    }


async def test_queue_gauges_come_from_one_replica_and_move_on_when_it_stops(metered: Suite) -> None:
    async def reported(service: str) -> Samples | None:
        samples = await scrape(metered, service)
        queues = {dict(ls)["postwire_queue"] for name, ls in samples if name == "postwire_queue_oldest_age_seconds"}
        return samples if _consumer_gauges(samples) == set(CONSUMERS) and queues == {"route", "deliver"} else None

    await poll_until(lambda: reported("mta_worker"), timeout=30, what="mta_worker's queue gauges")
    for service in SERVICES:
        if service != "mta_worker":
            assert not _consumer_gauges(await scrape(metered, service)), service

    # A second replica: it serves /metrics but reports no queue gauges while the first holds the lock.
    second = "mta_worker_2"
    metered.metrics_ports = {**metered.metrics_ports, second: free_port()}
    env = metered.service_env("mta_worker") | {
        "POSTWIRE_LISTEN": f"127.0.0.1:{free_port()}",
        "POSTWIRE_METRICS_LISTEN": f"127.0.0.1:{metered.metrics_ports[second]}",
    }
    replica = ManagedProcess(second, [sys.executable, "-m", "services.mta_worker"], env=env,
                             log_path=metered.data_dir / "logs" / f"{second}.log")
    replica.spawn()
    metered.processes[second] = replica
    replica.wait_ready(r"serving on", timeout=60)
    # Several of its refresh intervals (0.3 s in the tests) pass with the first one still up.
    for _ in range(10):
        assert not _consumer_gauges(await scrape(metered, second))
        assert _consumer_gauges(await scrape(metered, "mta_worker")) == set(CONSUMERS)
        await asyncio.sleep(0.1)

    # The first stops: its session, and the lock, end, and the second takes over.
    metered.processes["mta_worker"].stop(timeout=30)
    try:
        await poll_until(lambda: reported(second), timeout=30, what="the second replica to take over the gauges")
    finally:
        metered.start_service("mta_worker")


async def test_concurrent_sends_share_admission_round_trips(metered: Suite, api: grpc.aio.Channel) -> None:
    """Submission gathers the SendEmail calls that arrive together into one AdmitMany: policy
    answers fewer admission calls than there were sends, and every send is still answered."""
    tenant: Tenant = await create_tenant(metered)
    stub = mail_service_pb2_grpc.MailServiceStub(api)
    await stub.SendEmail(mail(to=[{"address": unique()}]), metadata=tenant.metadata)  # key cached
    policy = {"rpc_service": "postwire.internal.v1.PolicyService"}
    before = await scrape(metered, "policy")
    sends = 40
    # Suppressions locked: the first admission waits in policy, and the sends behind it gather.
    assert metered.database_url
    answers = await while_locked(
        metered.database_url,
        "suppressions",
        lambda: [stub.SendEmail(mail(to=[{"address": unique()}]), metadata=tenant.metadata) for _ in range(sends)],
    )
    assert len({a.message_id for a in answers}) == sends
    after = await scrape(metered, "policy")

    def admissions(samples: Samples) -> float:
        return sum(
            value(samples, "rpc_server_duration_milliseconds_count", **policy, rpc_method=method)
            for method in ("AdmitMessage", "AdmitMany")
        )

    # Before: one AdmitMessage per SendEmail (40).
    assert 0 < admissions(after) - admissions(before) <= sends // 4

"""The whole pipeline under dependency faults: a PostgreSQL outage while relays are answering "."
sends nothing twice, and a wiped JetStream store does not stretch shutdown past the grace.

The module runs its own copy of every service, with PostgreSQL behind a fault proxy and its own
NATS (restartable on the same port), so these faults cannot disturb the rest of the suite.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from postwire.v1 import mail_service_pb2, mail_service_pb2_grpc, message_pb2

from libs.capture import SmtpSink
from libs.embedded.nats_server import start_nats
from libs.embedded.process import ManagedProcess
from libs.embedded.suite import Suite, SuitePorts
from libs.testing.polling import poll_until
from libs.testing.suites import stop_suite
from libs.testing.tcp_proxy import TcpProxy
from tests.conftest import TEST_ENV, create_tenant
from tests.integration.helpers import create_database, host_port, mail, unique

GRACE = float(TEST_ENV["POSTWIRE_SHUTDOWN_GRACE_SECONDS"])
# The 5 s the manifests allow a stop beyond drain + grace (see test_worker_shutdown).
MARGIN = 5.0
REDELIVERY = float(TEST_ENV["POSTWIRE_ACK_WAIT_SECONDS"]) + float(TEST_ENV["POSTWIRE_STALL_SECONDS"]) + 3


@dataclass
class Pipeline:
    suite: Suite
    database: TcpProxy
    nats_dir: Path
    nats_port: int
    nats: ManagedProcess



@pytest.fixture(scope="module")
def pipeline(suite: Suite, smtp_sink: SmtpSink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    data_dir: Path = tmp_path_factory.mktemp("pipeline")
    assert suite.database_url
    direct = create_database(suite.database_url, "postwire_pipeline")
    nats_dir = data_dir / "nats"
    nats_proc, nats_url = start_nats(nats_dir)
    database = TcpProxy(*host_port(direct)).start()
    faulty = Suite(
        data_dir=data_dir,
        ports=SuitePorts.free(),
        smarthost=f"127.0.0.1:{smtp_sink.port}",
        smarthost_tls="none",
        nats_url=nats_url,
        database_url=database.url_for(direct),
        extra_env=dict(TEST_ENV),
    )
    state = Pipeline(faulty, database, nats_dir, host_port(nats_url)[1], nats_proc)
    try:
        faulty.start_infrastructure()
        faulty.start_services()
        yield state
    finally:
        database.up()
        stop_suite(faulty)
        database.stop()
        state.nats.stop(timeout=10)


@pytest.fixture
async def api(pipeline: Pipeline) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(pipeline.suite.ports.addr("edge")) as channel:
        yield channel


def _copies(sink: SmtpSink, address: str) -> int:
    return sum(1 for m in sink.messages() if address in m.rcpt_tos)


async def test_a_database_outage_while_relays_answer_the_final_dot_sends_nothing_twice(
    pipeline: Pipeline, api: grpc.aio.Channel, smtp_sink: SmtpSink
) -> None:
    tenant = await create_tenant(pipeline.suite)
    stub = mail_service_pb2_grpc.MailServiceStub(api)
    # The relay sits on each reply to "." long enough for the database to go away under it.
    rcpts = [unique("holddot3") for _ in range(8)]
    sent = [await stub.SendEmail(mail(to=[{"address": r}]), metadata=tenant.metadata) for r in rcpts]

    async def all_held() -> bool:
        held = {a for a, phase, _ in smtp_sink.attempts() if phase == "HOLD"}
        return all(r in held for r in rcpts)

    await poll_until(all_held, timeout=30, what="every transaction past its final '.'")
    pipeline.database.down()
    try:
        await asyncio.sleep(4)  # the replies arrive while PostgreSQL is away
    finally:
        pipeline.database.up()

    async def all_delivered() -> bool:
        for answer in sent:
            try:
                got = await stub.GetMessage(
                    mail_service_pb2.GetMessageRequest(message_id=answer.message_id), metadata=tenant.metadata
                )
            except grpc.aio.AioRpcError:
                return False
            if got.message.recipients[0].state != message_pb2.RECIPIENT_STATE_DELIVERED:
                return False
        return True

    await poll_until(all_delivered, timeout=60, what="every recipient DELIVERED")
    await asyncio.sleep(REDELIVERY)
    assert {r: _copies(smtp_sink, r) for r in rcpts} == dict.fromkeys(rcpts, 1)


async def test_shutdown_after_a_jetstream_store_wipe_finishes_within_the_grace(pipeline: Pipeline) -> None:
    consumers = ("router", "mta_worker", "events")
    pipeline.nats.stop(timeout=10)
    shutil.rmtree(pipeline.nats_dir / "jetstream", ignore_errors=True)
    pipeline.nats, _ = start_nats(pipeline.nats_dir, port=pipeline.nats_port)

    async def resubscribed() -> bool:
        outputs = [pipeline.suite.processes[name].output() for name in consumers]
        return all("re-subscribing" in out for out in outputs)

    await poll_until(resubscribed, timeout=30, what="every consumer to notice the wipe and re-subscribe")
    took = {}
    for name in consumers:
        started = time.monotonic()
        pipeline.suite.processes[name].stop(sig=signal.SIGTERM, timeout=40)
        took[name] = round(time.monotonic() - started, 1)
    assert all(seconds <= GRACE + MARGIN for seconds in took.values()), took

"""A message still waiting for the router when its give-up time passes expires without being
rendered or sent: a password reset that went unrouted for days must not arrive after all.

The suite's router is swapped for one with a two-second give-up time while the message waits,
then the ordinary one comes back, so the rest of the suite is unaffected.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import pytest
from postwire.v1 import event_pb2, mail_service_pb2, mail_service_pb2_grpc, message_pb2

from libs.capture import SmtpSink
from libs.embedded.process import ManagedProcess
from libs.embedded.suite import Suite
from tests.conftest import Tenant
from tests.integration.helpers import events_of, mail, unique, wait_for_events

GIVE_UP_SECONDS = 2.0


@pytest.fixture
def router_down(suite: Suite) -> Iterator[None]:
    suite.processes["router"].stop(timeout=30)
    try:
        yield
    finally:
        if suite.processes["router"].proc.poll() is not None:
            suite.start_service("router")


def _short_give_up_router(suite: Suite) -> ManagedProcess:
    env = suite.service_env("router") | {"POSTWIRE_RETRY_GIVE_UP_SECONDS": str(GIVE_UP_SECONDS)}
    proc = ManagedProcess(
        "router",
        [sys.executable, "-m", "services.router"],
        env=env,
        log_path=suite.data_dir / "logs" / "router-short-give-up.log",
    )
    proc.spawn()
    proc.wait_ready(r"serving on", timeout=60)
    return proc


async def test_message_past_its_give_up_time_expires_before_routing(
    suite: Suite, edge, tenant: Tenant, smtp_sink: SmtpSink, router_down: None
) -> None:
    address = unique("late")
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    sent = await stub.SendEmail(mail(to=[{"address": address}]), metadata=tenant.metadata)
    await asyncio.sleep(GIVE_UP_SECONDS + 0.5)

    router = _short_give_up_router(suite)
    try:
        events = await wait_for_events(edge, tenant.metadata, sent.message_id, [event_pb2.EVENT_TYPE_EXPIRED])
    finally:
        router.stop(timeout=30)
    suite.start_service("router")

    expired = [e for e in events if e.type == event_pb2.EVENT_TYPE_EXPIRED]
    assert [e.recipient for e in expired] == [address]
    assert "give-up time" in expired[0].reason
    message = await stub.GetMessage(
        mail_service_pb2.GetMessageRequest(message_id=sent.message_id), metadata=tenant.metadata
    )
    assert [r.state for r in message.message.recipients] == [message_pb2.RECIPIENT_STATE_EXPIRED]
    # Nothing was routed, so nothing can follow: no delivery event and no bytes at the sink.
    await asyncio.sleep(1.0)
    types = {e.type for e in await events_of(edge, tenant.metadata, sent.message_id)}
    assert event_pb2.EVENT_TYPE_DELIVERED not in types
    assert not [m for m in smtp_sink.messages() if address in m.rcpt_tos]

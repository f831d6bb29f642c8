"""The duplicate window is the reply to the final "." and no wider: an outcome is durable the
moment its reply arrives, so a worker killed after it (here, while the relay sits on QUIT) sends
nothing twice."""

from __future__ import annotations

import asyncio
import signal

from postwire.v1 import mail_service_pb2, mail_service_pb2_grpc, message_pb2

from libs.capture import SmtpSink
from libs.testing.polling import poll_until
from tests.conftest import TEST_ENV
from tests.integration.helpers import mail, unique

# After this long a lost outcome would have been retried: the lease (AckWait) runs out and the
# retry scheduler's stall period passes.
REDELIVERY = float(TEST_ENV["POSTWIRE_ACK_WAIT_SECONDS"]) + float(TEST_ENV["POSTWIRE_STALL_SECONDS"]) + 3


def _copies(sink: SmtpSink, address: str) -> int:
    return sum(1 for m in sink.messages() if address in m.rcpt_tos)


async def test_kill_after_the_final_dot_reply_and_before_quit_sends_nothing_twice(
    suite, edge, tenant, smtp_sink
) -> None:
    rcpt = unique("holdquit8")
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    sent = await stub.SendEmail(mail(to=[{"address": rcpt}]), metadata=tenant.metadata)

    async def quit_held() -> bool:
        return (rcpt, "HOLD", "QUIT") in smtp_sink.attempts()

    await poll_until(quit_held, timeout=30, what="the sink holding the QUIT reply")
    assert _copies(smtp_sink, rcpt) == 1
    suite.processes["mta_worker"].stop(sig=signal.SIGKILL, timeout=5)
    suite.start_service("mta_worker")

    async def status() -> message_pb2.RecipientStatus:
        got = await stub.GetMessage(
            mail_service_pb2.GetMessageRequest(message_id=sent.message_id), metadata=tenant.metadata
        )
        return got.message.recipients[0]

    async def delivered() -> message_pb2.RecipientStatus | None:
        current = await status()
        return current if current.state == message_pb2.RECIPIENT_STATE_DELIVERED else None

    await poll_until(delivered, timeout=40, what="the recipient to be DELIVERED")
    await asyncio.sleep(REDELIVERY)
    assert _copies(smtp_sink, rcpt) == 1
    final = await status()
    assert final.state == message_pb2.RECIPIENT_STATE_DELIVERED and final.attempts == 1

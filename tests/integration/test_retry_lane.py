"""A slow destination cannot hold every delivery slot: other mail goes out while it takes its time."""

from __future__ import annotations

import asyncio
import uuid

from postwire.v1 import mail_service_pb2, mail_service_pb2_grpc, message_pb2

from libs.embedded.suite import Suite
from libs.testing.polling import poll_until
from tests.integration.helpers import mail, unique

# More than POSTWIRE_WORKER_CONCURRENCY (32 by default): without a per-destination bound these
# alone fill every slot of the worker.
TARPIT_MESSAGES = 40


async def test_other_mail_is_delivered_while_a_tarpit_destination_holds_its_slots(
    edge, tenant, smtp_sink
) -> None:
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    tarpit = f"tarpit-{uuid.uuid4().hex[:8]}.example"
    # Each of these sits 12 s on the reply to its final "."; the other mail must be delivered
    # within the first hold, so the tarpit's sends go out together rather than one by one (40
    # serial sends on a busy machine took a good part of a shorter hold).
    slow = [f"holddot12+{uuid.uuid4().hex[:10]}@{tarpit}" for _ in range(TARPIT_MESSAGES)]
    held = await asyncio.gather(
        *(stub.SendEmail(mail(to=[{"address": rcpt}]), metadata=tenant.metadata) for rcpt in slow)
    )

    async def tarpit_busy() -> bool:
        return sum(1 for a, phase, _ in smtp_sink.attempts() if phase == "HOLD" and a in slow) >= 8

    await poll_until(tarpit_busy, timeout=30, what="the tarpit holding replies")
    others = [unique("other") for _ in range(5)]
    for rcpt in others:
        await stub.SendEmail(mail(to=[{"address": rcpt}]), metadata=tenant.metadata)

    async def others_delivered() -> bool:
        received = {r for m in smtp_sink.messages() for r in m.rcpt_tos}
        return all(r in received for r in others)

    await poll_until(others_delivered, timeout=30, what="the other mail at the sink")
    tarpit_accepted = sum(1 for m in smtp_sink.messages() if m.rcpt_tos[0] in slow)
    assert tarpit_accepted == 0, "other mail waited for the tarpit's replies"

    async def tarpit_done() -> bool:
        received = {r for m in smtp_sink.messages() for r in m.rcpt_tos}
        return all(r in received for r in slow)

    # The tarpit's mail is slowed, not lost: every message arrives, once.
    await poll_until(tarpit_done, timeout=90, what="every tarpit message at the sink")
    counts = [sum(1 for m in smtp_sink.messages() if r in m.rcpt_tos) for r in slow]
    assert counts == [1] * len(slow)

    # The sink records each message at "." and only then holds the reply: the last ones are
    # DELIVERED up to 12 s later. Waiting for that keeps their slots out of the next test.
    async def tarpit_delivered() -> bool:
        for answer in held:
            got = await stub.GetMessage(
                mail_service_pb2.GetMessageRequest(message_id=answer.message_id), metadata=tenant.metadata
            )
            if any(r.state != message_pb2.RECIPIENT_STATE_DELIVERED for r in got.message.recipients):
                return False
        return True

    await poll_until(tarpit_delivered, timeout=60, what="every tarpit message DELIVERED")


async def test_a_burst_to_one_fast_destination_waits_for_slots_rather_than_taking_the_retry_lane(
    suite: Suite, edge, tenant, smtp_sink
) -> None:
    # Past POSTWIRE_MAX_SLOTS_PER_DESTINATION (16 by default) at once: before, every message past
    # the 16th was postponed (a PostgreSQL write, the scheduler, the retry lane, a second claim).
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    domain = f"busy-{uuid.uuid4().hex[:8]}.example"
    # The worker learns the destination's transaction time from a warm-up wave as wide as its
    # slots, as from a provider it sends to all day: learnt from one lone message, it was a
    # fraction of what 16 at once take on a busy machine, and a waiter gave up before the first
    # slot came back (16 of 40 postponed in one run).
    warm = [f"warm+{uuid.uuid4().hex[:10]}@{domain}" for _ in range(16)]
    await asyncio.gather(
        *(stub.SendEmail(mail(to=[{"address": rcpt}]), metadata=tenant.metadata) for rcpt in warm)
    )
    await poll_until(
        lambda: _received(smtp_sink, warm), timeout=30, what="the warm-up (its transaction time)"
    )
    burst = [f"burst+{uuid.uuid4().hex[:10]}@{domain}" for _ in range(TARPIT_MESSAGES)]
    answers = await asyncio.gather(
        *(stub.SendEmail(mail(to=[{"address": rcpt}]), metadata=tenant.metadata) for rcpt in burst)
    )
    await poll_until(lambda: _received(smtp_sink, burst), timeout=60, what="the burst at the sink")
    counts = [sum(1 for m in smtp_sink.messages() if r in m.rcpt_tos) for r in burst]
    assert counts == [1] * len(burst)
    log = suite.processes["mta_worker"].log_path.read_text(encoding="utf-8", errors="replace")
    postponed = [a.message_id for a in answers if f"{a.message_id} postponed" in log]
    assert postponed == []


async def _received(smtp_sink, recipients: list[str]) -> bool:
    received = {r for m in smtp_sink.messages() for r in m.rcpt_tos}
    return all(r in received for r in recipients)

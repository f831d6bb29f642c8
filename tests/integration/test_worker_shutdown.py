"""SIGTERM of mta_worker is bounded by POSTWIRE_SHUTDOWN_GRACE_SECONDS and never costs a message:
a transaction past the final "." waits for its reply until the grace runs out; one that is not is
abandoned before the "." and its recipients go back to the queue without counting an attempt."""

from __future__ import annotations

import signal
import time

from postwire.v1 import mail_service_pb2, mail_service_pb2_grpc, message_pb2

from libs.capture import SmtpSink
from libs.embedded.suite import Suite
from libs.testing.polling import poll_until
from tests.conftest import TEST_ENV
from tests.integration.helpers import mail, unique

GRACE = float(TEST_ENV["POSTWIRE_SHUTDOWN_GRACE_SECONDS"])
# What a stop may take beyond the grace: the 5 s the manifests allow (libs/service_main: 1.5 s
# to record what the grace settled, 3 s for closing NATS and the pool, then interpreter exit).
# A tighter bound than the product's own failed on a busy machine (5.2 s seen). The held replies
# below outlast grace + margin by far, so a worker that waited for one still fails.
MARGIN = 5.0


async def _held(sink: SmtpSink, address: str, phase: str) -> bool:
    return (address, "HOLD", phase) in sink.attempts()


def _sigterm_worker(suite: Suite) -> float:
    """Seconds mta_worker took to exit after SIGTERM (the test fixture kills it past 30 s)."""
    started = time.monotonic()
    suite.processes["mta_worker"].stop(sig=signal.SIGTERM, timeout=30)
    return time.monotonic() - started


async def _status(stub, tenant, message_id: str) -> message_pb2.RecipientStatus:
    got = await stub.GetMessage(mail_service_pb2.GetMessageRequest(message_id=message_id), metadata=tenant.metadata)
    (status,) = got.message.recipients
    return status


async def _delivered(stub, tenant, message_id: str) -> message_pb2.RecipientStatus | None:
    status = await _status(stub, tenant, message_id)
    return status if status.state == message_pb2.RECIPIENT_STATE_DELIVERED else None


def _copies(sink: SmtpSink, address: str) -> int:
    return sum(1 for m in sink.messages() if address in m.rcpt_tos)


async def test_sigterm_waits_for_a_held_final_dot_reply_that_comes_within_the_grace(
    suite, edge, tenant, smtp_sink
) -> None:
    rcpt = unique("holddot2")
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    sent = await stub.SendEmail(mail(to=[{"address": rcpt}]), metadata=tenant.metadata)
    await poll_until(lambda: _held(smtp_sink, rcpt, "DATA"), timeout=30, what="the sink holding the '.' reply")
    try:
        took = _sigterm_worker(suite)
    finally:
        suite.start_service("mta_worker")
    assert took <= GRACE + MARGIN, f"mta_worker took {took:.1f}s to stop with a {GRACE}s grace"
    # The reply arrived inside the grace, so the outcome was recorded before the process left.
    status = await _status(stub, tenant, sent.message_id)
    assert status.state == message_pb2.RECIPIENT_STATE_DELIVERED and status.attempts == 1
    assert _copies(smtp_sink, rcpt) == 1


async def test_sigterm_gives_up_a_held_final_dot_reply_at_the_grace_and_delivers_once_later(
    suite, edge, tenant, smtp_sink
) -> None:
    rcpt = unique("holddot15")
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    sent = await stub.SendEmail(mail(to=[{"address": rcpt}]), metadata=tenant.metadata)
    await poll_until(lambda: _held(smtp_sink, rcpt, "DATA"), timeout=30, what="the sink holding the '.' reply")
    worker = suite.processes["mta_worker"]
    try:
        took = _sigterm_worker(suite)
        log = worker.output()
    finally:
        suite.start_service("mta_worker")
    assert took <= GRACE + MARGIN, f"mta_worker took {took:.1f}s to stop with a {GRACE}s grace"
    assert "may be delivered twice" in log
    # The sink dropped the message when the worker hung up; the retry delivers it once.
    status = await poll_until(lambda: _delivered(stub, tenant, sent.message_id), timeout=40, what="delivery")
    assert status.attempts == 2
    assert _copies(smtp_sink, rcpt) == 1


async def test_sigterm_abandons_a_transaction_before_the_final_dot_without_counting_an_attempt(
    suite, edge, tenant, smtp_sink
) -> None:
    rcpt = unique("holdrcpt15")
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    sent = await stub.SendEmail(mail(to=[{"address": rcpt}]), metadata=tenant.metadata)
    await poll_until(lambda: _held(smtp_sink, rcpt, "RCPT"), timeout=30, what="the sink holding the RCPT reply")
    try:
        took = _sigterm_worker(suite)
        assert took <= GRACE + MARGIN, f"mta_worker took {took:.1f}s to stop with a {GRACE}s grace"
        # Nothing from that attempt reached the sink, and the recipient is queued as before it.
        assert _copies(smtp_sink, rcpt) == 0
        status = await _status(stub, tenant, sent.message_id)
        assert status.state == message_pb2.RECIPIENT_STATE_QUEUED and status.attempts == 0
    finally:
        suite.start_service("mta_worker")
    status = await poll_until(lambda: _delivered(stub, tenant, sent.message_id), timeout=40, what="delivery")
    assert status.attempts == 1
    assert _copies(smtp_sink, rcpt) == 1

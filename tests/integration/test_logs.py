"""Logs that correlate: every line is JSON naming its service, lines written inside a span carry
its trace and span ids, and each accepted message and each delivery attempt is one INFO line
with the fields an operator searches by, never an address's local part."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import grpc
from postwire.v1 import mail_service_pb2_grpc

from libs.capture import SmtpSink
from libs.embedded.suite import Suite
from libs.testing.polling import poll_until
from tests.conftest import Tenant
from tests.integration.helpers import mail, wait_for_mail

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
SPAN_ID = re.compile(r"^[0-9a-f]{16}$")


def _lines(suite: Suite, service: str) -> list[dict[str, Any]]:
    text = suite.processes[service].log_path.read_text(encoding="utf-8", errors="replace")
    # Complete lines only: the services are still writing, and the last one may be half there.
    text = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _find(suite: Suite, service: str, message: str, message_id: str) -> list[dict[str, Any]]:
    return [e for e in _lines(suite, service) if e["message"] == message and e.get("message_id") == message_id]


async def test_accepted_and_delivery_attempt_lines_share_the_send_trace(
    suite: Suite, edge: grpc.aio.Channel, tenant: Tenant, smtp_sink: SmtpSink
) -> None:
    tag = uuid.uuid4().hex[:10]
    locals_ = (f"logged-a-{tag}", f"logged-b-{tag}")
    recipients = [f"{locals_[0]}@example.com", f"{locals_[1]}@mail.example.net"]
    sent = await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
        mail(to=[{"address": a} for a in recipients], stream="receipts"), metadata=tenant.metadata
    )
    for address in recipients:
        await wait_for_mail(smtp_sink, address)

    async def accepted_lines() -> list[dict[str, Any]]:
        return _find(suite, "submission", "message accepted", sent.message_id)

    async def attempt_lines() -> list[dict[str, Any]]:
        found = _find(suite, "mta_worker", "delivery attempt", sent.message_id)
        return found if len(found) == 2 else []

    [accepted] = await poll_until(accepted_lines, timeout=10, what="the accepted line")
    attempts = await poll_until(attempt_lines, timeout=10, what="two delivery attempt lines")

    assert accepted["level"] == "info"
    assert accepted["service"] == "submission"
    assert accepted["tenant_id"] == tenant.id
    assert accepted["recipients"] == 2
    assert accepted["stream"] == "receipts"
    assert TRACE_ID.match(accepted["trace_id"]) and SPAN_ID.match(accepted["span_id"])

    assert sorted(a["recipient_domain"] for a in attempts) == ["example.com", "mail.example.net"]
    for attempt in attempts:
        assert attempt["level"] == "info"
        assert attempt["service"] == "mta_worker"
        assert attempt["outcome"] == "delivered"
        assert attempt["smtp_code"] == 250
        assert attempt["remote_host"]  # the relay the suite delivers through
        assert isinstance(attempt["duration_ms"], int) and attempt["duration_ms"] >= 0
        assert attempt["attempt"] == 1
        # The trace started at the edge's SendEmail and crossed NATS twice to get here.
        assert attempt["trace_id"] == accepted["trace_id"]
        assert SPAN_ID.match(attempt["span_id"]) and attempt["span_id"] != accepted["span_id"]

    # Addresses are personal data: their local parts appear in no service's log.
    for service in suite.processes:
        text = suite.processes[service].log_path.read_text(encoding="utf-8", errors="replace")
        for local in locals_:
            assert local not in text, f"{service} logged the local part {local!r}"


async def test_every_line_of_every_service_is_json_naming_the_service(suite: Suite) -> None:
    for service in suite.processes:
        lines = _lines(suite, service)  # json.loads raises on any line that is not JSON
        assert lines, f"{service} wrote nothing"
        assert {e["service"] for e in lines} == {service}, service
        assert any(e["message"] == f"{service} serving on {suite.ports.addr(service)}" for e in lines)

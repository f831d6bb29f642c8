"""The public address works with grpcurl: reflection lists every public service, and a send works."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tests.integration.helpers import unique, wait_for_mail

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


async def _grpcurl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        GRPCURL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_reflection_lists_the_public_services(suite) -> None:
    listed = (await _grpcurl("-plaintext", suite.ports.addr("edge"), "list")).split()
    for name in (
        "postwire.v1.MailService",
        "postwire.v1.TemplateService",
        "postwire.v1.EventService",
        "postwire.v1.WebhookService",
        "postwire.v1.AdminService",
        "postwire.v1.SuppressionService",
        "postwire.v1.DomainService",
        "grpc.health.v1.Health",
    ):
        assert name in listed
    described = await _grpcurl("-plaintext", suite.ports.addr("edge"), "describe", "postwire.v1.EventService")
    assert "StreamEvents" in described and "stream .postwire.v1.StreamEventsResponse" in described


async def test_send_with_grpcurl(suite, tenant, smtp_sink) -> None:
    rcpt = unique()
    body = {
        "from": {"address": "dev@example.com"},
        "to": [{"address": rcpt}],
        "subject": "From grpcurl",
        "text_body": "It works.",
    }
    out = await _grpcurl(
        "-plaintext",
        "-H",
        f"authorization: Bearer {tenant.api_key}",
        "-d",
        json.dumps(body),
        suite.ports.addr("edge"),
        "postwire.v1.MailService/SendEmail",
    )
    answer = json.loads(out)
    message_id = answer.get("messageId") or answer["message_id"]
    (received,) = await wait_for_mail(smtp_sink, rcpt)
    assert received.header("X-Postwire-Message-Id") == message_id

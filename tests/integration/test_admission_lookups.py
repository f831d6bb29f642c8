"""Concurrent admissions share their suppression lookups, and sharing changes no decision: each
send still gets its own tenant's and its own unsubscribe group's answers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import grpc
from postwire.internal.v1 import policy_service_pb2, policy_service_pb2_grpc
from postwire.v1 import (
    mail_service_pb2_grpc,
    message_pb2,
    suppression_service_pb2,
    suppression_service_pb2_grpc,
)

from tests.conftest import INTERNAL_AUTH, create_tenant
from tests.integration.helpers import mail, unique
from tests.integration.table_lock import while_locked

CALLS = 60
UNSUBSCRIBE = suppression_service_pb2.SUPPRESSION_REASON_UNSUBSCRIBE
MANUAL = suppression_service_pb2.SUPPRESSION_REASON_MANUAL
SUPPRESSED = message_pb2.RECIPIENT_STATE_SUPPRESSED
ACCEPTED = message_pb2.RECIPIENT_STATE_ACCEPTED


@asynccontextmanager
async def _statements(suite, application: str) -> AsyncIterator[list[str]]:
    """The statements `application` runs inside the block, from PostgreSQL's own log
    (log_statement = 'all' for the block's duration)."""
    logs = list(Path(suite.data_dir).rglob("postgres.log"))
    assert logs, "the embedded PostgreSQL's log is needed to count statements"
    conn = await asyncpg.connect(suite.database_url)
    seen: list[str] = []
    try:
        await conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        await conn.execute("ALTER SYSTEM SET log_line_prefix = '%a| '")
        await conn.execute("SELECT pg_reload_conf()")
        await asyncio.sleep(0.5)
        start = logs[0].stat().st_size
        yield seen
        await asyncio.sleep(0.5)
        end = logs[0].stat().st_size
    finally:
        await conn.execute("ALTER SYSTEM RESET log_statement")
        await conn.execute("ALTER SYSTEM RESET log_line_prefix")
        await conn.execute("SELECT pg_reload_conf()")
        await conn.close()
    with logs[0].open("rb") as f:
        f.seek(start)
        text = f.read(end - start).decode(errors="replace")
    pattern = re.compile(rf"^{re.escape(application)}\| LOG:  (?:statement|execute [^:]*): (.*)$", re.M)
    seen.extend(pattern.findall(text))


async def test_concurrent_admissions_share_suppression_lookups(suite) -> None:
    tenant = await create_tenant(suite)
    async with grpc.aio.insecure_channel(suite.ports.addr("policy")) as channel:
        stub = policy_service_pb2_grpc.PolicyServiceStub(channel)

        def admit(address: str) -> policy_service_pb2.AdmitMessageRequest:
            return policy_service_pb2.AdmitMessageRequest(
                tenant_id=tenant.id, stream="transactional", recipients=[address], from_domain="example.com"
            )

        await stub.AdmitMessage(admit(unique()), metadata=INTERNAL_AUTH)  # tenant and domain cached
        async with _statements(suite, "postwire-policy") as statements:
            # The first lookup waits for the lock, and every admission behind it with it.
            answers = await while_locked(
                suite.database_url,
                "suppressions",
                lambda: [stub.AdmitMessage(admit(unique()), metadata=INTERNAL_AUTH) for _ in range(CALLS)],
            )
    assert all(list(a.decisions) == [policy_service_pb2.DECISION_ADMIT] for a in answers)
    lookups = [s for s in statements if "FROM suppressions" in s or "JOIN suppressions" in s]
    # Before: one lookup per admission with a new address (CALLS statements).
    assert 0 < len(lookups) <= CALLS // 4


async def test_shared_lookups_keep_each_send_to_its_own_tenant_and_group(suite, edge, smtp_sink) -> None:
    first, second = await create_tenant(suite), await create_tenant(suite)
    everywhere, news_only, clean = unique("everywhere"), unique("news"), unique("clean")
    suppressions = suppression_service_pb2_grpc.SuppressionServiceStub(edge)
    await suppressions.BatchCreateSuppressions(
        suppression_service_pb2.BatchCreateSuppressionsRequest(
            suppressions=[
                {"address": everywhere, "reason": MANUAL},
                {"address": news_only, "reason": UNSUBSCRIBE, "unsubscribe_group": "news"},
            ]
        ),
        metadata=first.metadata,
    )
    mail_stub = mail_service_pb2_grpc.MailServiceStub(edge)
    recipients = [{"address": everywhere}, {"address": news_only}, {"address": clean}]
    # Interleaved so the sends of both tenants and both groups are asked for together.
    cases = [
        (first, "news", [SUPPRESSED, SUPPRESSED, ACCEPTED]),
        (first, "billing", [SUPPRESSED, ACCEPTED, ACCEPTED]),
        (second, "news", [ACCEPTED, ACCEPTED, ACCEPTED]),
    ] * 10
    answers = await asyncio.gather(
        *(
            mail_stub.SendEmail(mail(to=recipients, unsubscribe_group=group), metadata=tenant.metadata)
            for tenant, group, _ in cases
        )
    )
    for (_, group, expected), answer in zip(cases, answers, strict=True):
        assert [r.state for r in answer.recipients] == expected, group

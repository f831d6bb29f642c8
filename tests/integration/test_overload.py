"""Past capacity the public address refuses the excess with RESOURCE_EXHAUSTED + RetryInfo and
ErrorInfo SERVER_OVERLOADED (libs.grpcx.overload), while every accepted message is delivered once
and a refused one leaves nothing behind.

Two shapes, each with its own processes on the suite's NATS and PostgreSQL (the suite's router,
mta_worker and events carry their mail on to the sink):
- a submission with a tiny POSTWIRE_MAX_IN_FLIGHT behind an edge with the default: the back end
  sheds and the edge passes its status and details through unchanged;
- an edge with a tiny limit in front of the suite's submission: the edge sheds by itself.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from postwire.v1 import admin_service_pb2, admin_service_pb2_grpc, mail_service_pb2, mail_service_pb2_grpc

from libs.capture import SmtpSink
from libs.embedded.ports import free_port
from libs.embedded.process import ManagedProcess
from libs.embedded.suite import Suite
from libs.grpcx.overload import OVERLOADED_REASON
from libs.grpcx.status import retry_delay
from libs.priority import realtime_permitted
from libs.testing.polling import poll_until
from tests.conftest import ADMIN_TOKEN, Tenant, create_tenant
from tests.integration.helpers import mail, unique, wait_for_mail

CALLS = 40
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


@dataclass
class Shedding:
    # An edge in front of a submission that runs 2 calls at once and never waits for a turn.
    behind_tight_submission: str
    # An edge that itself runs 2 calls at once, in front of the suite's submission.
    tight_edge: str


def _spawn(suite: Suite, name: str, module: str, env: dict[str, str]) -> ManagedProcess:
    proc = ManagedProcess(
        name, [sys.executable, "-m", module], env=env, log_path=suite.data_dir / "logs" / f"{name}.log"
    )
    proc.spawn()
    return proc


@pytest.fixture(scope="module")
def shedding(suite: Suite) -> Iterator[Shedding]:
    submission_addr = f"127.0.0.1:{free_port()}"
    edge_a = f"127.0.0.1:{free_port()}"
    edge_b = f"127.0.0.1:{free_port()}"
    tight = {"POSTWIRE_MAX_IN_FLIGHT": "2", "POSTWIRE_MAX_IN_FLIGHT_WAIT_MS": "0"}
    procs = [
        _spawn(
            suite,
            "submission-tight",
            "services.submission",
            suite.service_env("submission") | {"POSTWIRE_LISTEN": submission_addr} | tight,
        ),
        _spawn(
            suite,
            "edge-before-tight",
            "services.edge",
            suite.service_env("edge") | {"POSTWIRE_LISTEN": edge_a, "POSTWIRE_SUBMISSION_ADDR": submission_addr},
        ),
        _spawn(suite, "edge-tight", "services.edge", suite.service_env("edge") | {"POSTWIRE_LISTEN": edge_b} | tight),
    ]
    try:
        for proc in procs:
            proc.wait_ready(r"serving on", timeout=60)
        yield Shedding(edge_a, edge_b)
    finally:
        for proc in reversed(procs):
            proc.stop(timeout=30)


def _details(exc: grpc.aio.AioRpcError) -> dict[str, Any]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status in the trailers"
    found: dict[str, Any] = {}
    for packed in status.details:
        for kind in (error_details_pb2.RetryInfo, error_details_pb2.ErrorInfo, error_details_pb2.QuotaFailure):
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                found[kind.__name__] = detail
    return found


async def _burst(address: str, tenant: Tenant, recipient: str) -> tuple[list[str], list[tuple[str, Any]]]:
    """CALLS concurrent SendEmail calls; (accepted message ids, [(refused key, its error)])."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = mail_service_pb2_grpc.MailServiceStub(channel)
        keys = [uuid.uuid4().hex for _ in range(CALLS)]
        answers = await asyncio.gather(
            *(
                stub.SendEmail(
                    mail(to=[{"address": recipient}], idempotency_key=key, subject=f"burst {key}"),
                    metadata=tenant.metadata,
                    timeout=30,
                )
                for key in keys
            ),
            return_exceptions=True,
        )
    accepted = [a.message_id for a in answers if isinstance(a, mail_service_pb2.SendEmailResponse)]
    refused = [(k, a) for k, a in zip(keys, answers, strict=True) if isinstance(a, BaseException)]
    return accepted, refused


async def _messages_of(suite: Suite, tenant: Tenant) -> set[str]:
    assert suite.database_url
    conn = await asyncpg.connect(suite.database_url)
    try:
        rows = await conn.fetch("SELECT id::text AS id FROM messages WHERE tenant_id = $1", uuid.UUID(tenant.id))
    finally:
        await conn.close()
    return {r["id"] for r in rows}


async def _check(address: str, service: str, suite: Suite, smtp_sink: SmtpSink) -> None:
    tenant = await create_tenant(suite)
    recipient = unique("burst")
    accepted, refused = await _burst(address, tenant, recipient)

    assert refused, "nothing was shed: the limit did not apply"
    assert accepted, "everything was shed"
    for _, exc in refused:
        assert isinstance(exc, grpc.aio.AioRpcError), exc
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (exc.code(), exc.details())
        details = _details(exc)
        assert details["RetryInfo"].retry_delay.ToTimedelta().total_seconds() > 0
        assert details["ErrorInfo"].reason == OVERLOADED_REASON
        assert details["ErrorInfo"].metadata["service"] == service
        assert details["QuotaFailure"].violations[0].subject == f"server:{service}"

    # A refused call left no row: the tenant's messages are exactly the accepted ones.
    assert await _messages_of(suite, tenant) == set(accepted)
    # Every accepted message reaches the sink exactly once.
    received = await wait_for_mail(smtp_sink, recipient, count=len(accepted), timeout=60)
    await asyncio.sleep(1.0)  # a late duplicate would arrive within this
    received = [m for m in smtp_sink.messages() if recipient in m.rcpt_tos]
    assert len(received) == len(accepted)

    # The refused call's idempotency key was never claimed: retrying it (as RetryInfo says)
    # sends a new message instead of replaying a refusal.
    key = refused[0][0]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = mail_service_pb2_grpc.MailServiceStub(channel)
        retried = await stub.SendEmail(
            mail(to=[{"address": recipient}], idempotency_key=key, subject=f"burst {key}"),
            metadata=tenant.metadata,
            timeout=30,
        )
    assert retried.message_id not in accepted
    assert await _messages_of(suite, tenant) == {*accepted, retried.message_id}


async def test_a_saturated_submission_sheds_and_the_edge_passes_its_status_through(
    shedding: Shedding, suite: Suite, smtp_sink: SmtpSink
) -> None:
    await _check(shedding.behind_tight_submission, "submission", suite, smtp_sink)


async def test_a_saturated_edge_sheds_by_itself(shedding: Shedding, suite: Suite, smtp_sink: SmtpSink) -> None:
    await _check(shedding.tight_edge, "edge", suite, smtp_sink)


async def test_a_call_that_gets_no_database_connection_in_time_answers_unavailable_with_retry_info(
    suite: Suite,
) -> None:
    """Policy with one pooled connection, held by a call stuck behind a table lock: the next call
    must not queue behind it without bound but answer UNAVAILABLE + RetryInfo promptly."""
    assert suite.database_url
    listen = f"127.0.0.1:{free_port()}"
    policy = _spawn(
        suite,
        "policy-one-connection",
        "services.policy",
        suite.service_env("policy")
        | {
            "POSTWIRE_LISTEN": listen,
            "POSTWIRE_DB_POOL_MIN_SIZE": "1",
            "POSTWIRE_DB_POOL_MAX_SIZE": "1",
            "POSTWIRE_DB_ACQUIRE_TIMEOUT_SECONDS": "0.3",
        },
    )
    locker = await asyncpg.connect(suite.database_url)
    try:
        policy.wait_ready(r"serving on", timeout=60)
        async with grpc.aio.insecure_channel(listen) as channel:
            admin = admin_service_pb2_grpc.AdminServiceStub(channel)
            list_tenants = admin_service_pb2.ListTenantsRequest(page_size=1)
            tx = locker.transaction()
            await tx.start()
            await locker.execute("LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE")
            try:
                stuck = asyncio.ensure_future(admin.ListTenants(list_tenants, metadata=ADMIN, timeout=30))
                # Wait until the stuck call holds the only connection (it waits on the lock).
                async def waiting_on_lock() -> bool:
                    return bool(
                        await locker.fetchval(
                            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'tenants'::regclass"
                        )
                    )

                await poll_until(waiting_on_lock, timeout=20, what="a policy call waiting on the lock")
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await admin.ListTenants(list_tenants, metadata=ADMIN, timeout=20)
            finally:
                await tx.rollback()
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
            assert retry_delay(refused.value), "UNAVAILABLE without RetryInfo"
            assert "database" in (refused.value.details() or "")
            # The stuck call completes once the lock goes: nothing was lost or poisoned.
            await stuck
    finally:
        await locker.close()
        policy.stop(timeout=30)


def _policies(pid: int) -> set[tuple[int, int]]:
    """(scheduling policy, real-time priority) of every thread of a process."""
    found = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            found.add((os.sched_getscheduler(int(tid)), os.sched_getparam(int(tid)).sched_priority))
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
    return found


async def test_submission_runs_real_time_only_while_the_edge_sheds_and_mail_still_arrives_once(
    suite: Suite, smtp_sink: SmtpSink
) -> None:
    """POSTWIRE_REALTIME_PRIORITY on submission with its default POSTWIRE_REALTIME_WHEN=shedding
    (libs.shedding): normal until the edge in front of it refuses calls, SCHED_RR while it does,
    and normal again a moment after; the burst's accepted mail arrives once, as without it."""
    raised = {"POSTWIRE_REALTIME_PRIORITY": "5"}
    if not realtime_permitted(5):  # without the privilege the service must refuse to start instead
        refused = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "services.submission"],
            env=suite.service_env("submission") | {"POSTWIRE_LISTEN": f"127.0.0.1:{free_port()}"} | raised,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 2 and "POSTWIRE_REALTIME_PRIORITY=5: not permitted" in refused.stderr
        return
    submission_addr = f"127.0.0.1:{free_port()}"
    edge_addr = f"127.0.0.1:{free_port()}"
    submission = _spawn(
        suite,
        "submission-realtime-while-shedding",
        "services.submission",
        suite.service_env("submission") | {"POSTWIRE_LISTEN": submission_addr} | raised,
    )
    edge = _spawn(
        suite,
        "edge-tight-before-realtime",
        "services.edge",
        suite.service_env("edge")
        | {"POSTWIRE_LISTEN": edge_addr, "POSTWIRE_SUBMISSION_ADDR": submission_addr, "POSTWIRE_MAX_IN_FLIGHT": "2"},
    )
    normal = {(os.SCHED_OTHER, 0)}
    try:
        for proc in (submission, edge):
            proc.wait_ready(r"serving on", timeout=60)
        assert _policies(submission.pid) == normal

        seen: list[set[tuple[int, int]]] = []
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                seen.append(_policies(submission.pid))
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        tenant = await create_tenant(suite)
        recipient = unique("raised")
        accepted: list[str] = []
        refused: list[tuple[str, Any]] = []
        try:
            # Overlapping bursts a quarter of a second apart: the edge marks the calls it forwards
            # within a second of a refusal, and in a single burst every call arrives before the
            # first refusal. (Bursts one after another left more than that second between them
            # whenever the accepted calls were slow to answer.)
            bursts = []
            for _ in range(12):
                bursts.append(asyncio.create_task(_burst(edge_addr, tenant, recipient)))
                await asyncio.sleep(0.25)
                if {(os.SCHED_RR, 5)} in seen:
                    break
            for some_accepted, some_refused in await asyncio.gather(*bursts):
                accepted += some_accepted
                refused += some_refused
        finally:
            done.set()
            await sampler
        assert refused and accepted
        assert all(exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for _, exc in refused)
        assert {(os.SCHED_RR, 5)} in seen, f"submission never ran real-time: {seen[-3:]}"

        async def settled() -> bool:
            return _policies(submission.pid) == normal

        # Back a second after the last marked call (checked every quarter of it).
        await poll_until(settled, timeout=10, what="submission back at normal priority")
        assert await _messages_of(suite, tenant) == set(accepted)
        await wait_for_mail(smtp_sink, recipient, count=len(accepted), timeout=60)
        await asyncio.sleep(1.0)  # a late duplicate would arrive within this
        assert len([m for m in smtp_sink.messages() if recipient in m.rcpt_tos]) == len(accepted)
    finally:
        edge.stop(timeout=30)
        submission.stop(timeout=30)

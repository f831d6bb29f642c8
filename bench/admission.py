"""Admission throughput and latency: `python -m bench.admission` (also run by `make bench`).

Starts embedded PostgreSQL and NATS and one policy service, then calls
PolicyService/AdmitMessage (what submission calls for every send) with C calls in flight for a
fixed time, in four cases: a tenant without limits; one with a rate limit and a daily quota (two
conditional upserts in one transaction per call); one with a suppression lookup for 10
recipients; and the same 10 recipients against limits too. Prints a markdown table and writes
it to --out. Then the same two tenants through AdmitMany (what submission sends for the SendEmail
calls that arrive together), 32 messages per call. Every case also gives the CPU the policy
process and the PostgreSQL process tree spent per admission. Numbers are for one policy replica
on this machine; compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import grpc
from postwire.internal.v1 import policy_service_pb2, policy_service_pb2_grpc
from postwire.v1 import admin_service_pb2, admin_service_pb2_grpc

from bench.compare import tree_cpu
from bench.side_by_side import proc_stats
from libs.embedded.suite import Suite, SuitePorts

ADMIN_TOKEN = "pwadmin_bench"
INTERNAL_TOKEN = "pwinternal_bench_" + uuid.uuid4().hex
INTERNAL_AUTH = (("authorization", f"Bearer {INTERNAL_TOKEN}"),)


async def _tenant(channel: grpc.aio.Channel, limits: list[admin_service_pb2.StreamLimits]) -> str:
    admin = admin_service_pb2_grpc.AdminServiceStub(channel)
    auth = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    made = await admin.CreateTenant(
        admin_service_pb2.CreateTenantRequest(tenant=admin_service_pb2.Tenant(name="bench", limits=limits)),
        metadata=auth,
    )
    # Submission authenticates the key itself (cached); AdmitMessage is asked for the tenant.
    return str(made.tenant.id)


async def _run_case(
    stub: policy_service_pb2_grpc.PolicyServiceAsyncStub,
    tenant_id: str,
    recipients: int,
    seconds: float,
    in_flight: int,
    many: int = 0,
) -> tuple[int, list[float], int]:
    """Admissions/s, call latencies and failed calls; `many` > 0 asks AdmitMany with that many
    messages per call (each of them counted as an admission)."""
    request = policy_service_pb2.AdmitMessageRequest(
        tenant_id=tenant_id,
        stream="transactional",
        from_domain="example.com",
        recipients=[f"user{i}@example.com" for i in range(recipients)],
    )
    batch = policy_service_pb2.AdmitManyRequest(messages=[request] * many)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                if many:
                    answer = await stub.AdmitMany(batch, metadata=INTERNAL_AUTH, timeout=10)
                    errors += sum(1 for r in answer.results if r.HasField("error"))
                else:
                    await stub.AdmitMessage(request, metadata=INTERNAL_AUTH, timeout=10)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    return int(len(latencies) * max(many, 1) / elapsed), latencies, errors


def _cpu(suite: Suite) -> tuple[float, float]:
    """CPU seconds so far of the policy process and of PostgreSQL's process tree."""
    stats = proc_stats()
    return tree_cpu(stats, suite.processes["policy"].pid), tree_cpu(stats, suite.infra_pids["postgres"])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _bench(suite: Suite, seconds: float, in_flight: int) -> str:
    async with grpc.aio.insecure_channel(suite.ports.addr("policy")) as channel:
        stub = policy_service_pb2_grpc.PolicyServiceStub(channel)
        plain = await _tenant(channel, [])
        # High enough never to refuse during the run: the point is the cost of checking.
        limited = await _tenant(
            channel,
            [
                admin_service_pb2.StreamLimits(
                    stream="transactional",
                    recipients_per_second=1_000_000,
                    burst=1_000_000,
                    recipients_per_day=10**12,
                )
            ],
        )
        cases = [
            ("no limits, 1 recipient", plain, 1, in_flight, 0),
            ("rate limit + daily quota, 1 recipient", limited, 1, in_flight, 0),
            ("no limits, 10 recipients (suppression answers cached)", plain, 10, in_flight, 0),
            ("rate limit + daily quota, 10 recipients", limited, 10, in_flight, 0),
            ("no limits, 1 recipient, 1 call in flight (idle latency)", plain, 1, 1, 0),
            ("rate limit + daily quota, 1 call in flight (idle latency)", limited, 1, 1, 0),
            ("AdmitMany of 32, no limits, 1 recipient", plain, 1, 2, 32),
            ("AdmitMany of 32, rate limit + daily quota, 1 recipient", limited, 1, 2, 32),
        ]
        rows = []
        for label, key, recipients, flight, many in cases:
            await _run_case(stub, key, recipients, 1.0, flight, many)  # warm caches and connections
            policy_before, pg_before = _cpu(suite)
            rate, latencies, errors = await _run_case(stub, key, recipients, seconds, flight, many)
            policy_after, pg_after = _cpu(suite)
            admitted = max(1.0, rate * seconds)
            rows.append(
                f"| {label} | {flight} | {rate} | {_pct(latencies, 0.5):.2f} | {_pct(latencies, 0.99):.2f} | "
                f"{statistics.mean(latencies) * 1000:.2f} | {errors} | "
                f"{(policy_after - policy_before) * 1000 / admitted:.3f} | {(pg_after - pg_before) * 1000 / admitted:.3f} |"
            )
    return "\n".join(
        [
            "# Admission benchmark",
            "",
            f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
            f"- one policy replica, AdmitMessage for {seconds:g} s per case, client on the same 2 cores",
            "",
            "| case | in flight (calls) | admissions/s | p50 ms (call) | p99 ms (call) | mean ms (call) | errors |"
            " policy CPU ms/admission | PostgreSQL CPU ms/admission |",
            "|:---|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.admission")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("bench/results/admission.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="postwire-bench-admission-") as tmp:
        suite = Suite(
            data_dir=Path(tmp),
            ports=SuitePorts.free(),
            smarthost="127.0.0.1:9",
            smarthost_tls="none",
            extra_env={
                "POSTWIRE_ADMIN_TOKEN": ADMIN_TOKEN,
                "POSTWIRE_INTERNAL_TOKEN": INTERNAL_TOKEN,
                "POSTWIRE_ENV": "dev",
                "POSTWIRE_LOG_LEVEL": "WARNING",
                "POSTWIRE_DEV_FROM_DOMAINS": "example.com",
            },
        )
        try:
            suite.start_infrastructure()
            suite.start_service("policy")
            table = asyncio.run(_bench(suite, args.seconds, args.in_flight))
        finally:
            suite.stop()
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)


if __name__ == "__main__":
    main()

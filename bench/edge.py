"""`python -m bench.edge`: the edge's own CPU per forwarded call, apart from everything behind it.

The edge runs as in production (its interceptors, INFO logs, tracing at its default) in front
of a stand-in MailService in another process that answers SendEmail at once, so the edge's CPU
time per call is not mixed with submission's or the pipeline's. A client process keeps
`--concurrency` calls in flight; the figure is the edge process's CPU seconds (user + system,
from /proc) over the timed calls. CPU time, unlike throughput, holds up fairly well on a
machine shared with other work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2
from postwire.v1 import mail_service_pb2, mail_service_pb2_grpc

from bench.__main__ import build_request
from libs.embedded.ports import free_port

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_ANSWER = mail_service_pb2.SendEmailResponse(message_id="0" * 26).SerializeToString()


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def _backend(port: int) -> None:
    """A MailService that answers SendEmail at once (raw bytes: nothing to decode)."""

    class Answer(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes] | None:
            async def answer(request: bytes, context: object) -> bytes:
                return _ANSWER

            return grpc.unary_unary_rpc_method_handler(answer)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers([Answer()])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def _drive(port: int, edge_pid: int, calls: int, concurrency: int) -> float:
    request = build_request("edge", 0, "bench@example.com")  # the ~2 KB message of every case
    metadata = (("authorization", "Bearer pw_bench_key"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        # grpc_health's stubs declare HealthStub without its methods; the call, typed by hand.
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        await check(health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=30)
        stub = mail_service_pb2_grpc.MailServiceStub(channel)

        async def run(count: int) -> None:
            remaining = iter(range(count))

            async def worker() -> None:
                for _ in remaining:
                    await stub.SendEmail(request, metadata=metadata, timeout=30)

            await asyncio.gather(*(worker() for _ in range(concurrency)))

        await run(min(500, calls))  # warm-up: connections, handler caches
        before = cpu_seconds(edge_pid)
        await run(calls)
        return (cpu_seconds(edge_pid) - before) / calls


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--backend", type=int, help=argparse.SUPPRESS)  # the stand-in's own process
    args = parser.parse_args(argv)
    if args.backend:
        asyncio.run(_backend(args.backend))
        return 0
    backend_port, edge_port = free_port(), free_port()
    backend = subprocess.Popen([sys.executable, "-m", "bench.edge", "--backend", str(backend_port)])
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("POSTWIRE_")},
        "POSTWIRE_ENV": "dev",
        "POSTWIRE_LOG_LEVEL": "INFO",
        "POSTWIRE_INTERNAL_TOKEN": "pwinternal_bench_" + uuid.uuid4().hex,
        "POSTWIRE_LISTEN": f"127.0.0.1:{edge_port}",
        "POSTWIRE_SUBMISSION_ADDR": f"127.0.0.1:{backend_port}",
        **{k: v for k, v in os.environ.items() if k.startswith("POSTWIRE_EDGE_BENCH_")},
    }
    edge = subprocess.Popen([sys.executable, "-m", "services.edge"], env=env, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        per_call = asyncio.run(_drive(edge_port, edge.pid, args.calls, args.concurrency))
    finally:
        for proc in (edge, backend):
            proc.terminate()
            proc.wait(10)
    print(
        f"edge CPU per forwarded SendEmail: {per_call * 1000:.3f} ms ({args.calls} calls, {args.concurrency} in flight)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The start-up and shutdown sequence every service shares, around its own wiring.

Start: config → the dev switch (libs.dev_switch) → logging → telemetry → the service's `start` (pool, NATS, servicers, consumers)
→ gRPC start → SERVING. SIGTERM: NOT_SERVING → drain pause → stop consuming → stop gRPC with
grace → the service's `close` (finish or hand back work, close NATS, then the pool) → flush
traces last, so the shutdown itself is traced.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from libs.config import CommonConfig
from libs.dev_switch import refusal
from libs.grpcx.server import GrpcServer
from libs.runtime import configure_logging, wait_for_stop_signal
from libs.telemetry import setup_telemetry, shutdown_telemetry

__all__ = ["Service", "serve"]

_log = logging.getLogger("postwire")


@dataclass
class Service:
    """What a service's wiring hands back: hooks run in shutdown order."""

    stop_intake: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


async def serve(
    common: CommonConfig,
    env: Mapping[str, str],
    wire: Callable[[GrpcServer], Awaitable[Service]],
) -> None:
    refused = refusal(env, common.service)
    if refused:
        # One plain line on stderr and a non-zero exit, before anything is opened.
        print(refused, file=sys.stderr, flush=True)
        raise SystemExit(2)
    configure_logging(common.service, common.log_level)
    setup_telemetry(common.service, env)
    server = GrpcServer(common.listen, internal_token=common.internal_token)
    service = await wire(server)
    await server.start()
    _log.info("%s serving on %s", common.service, common.listen)
    await wait_for_stop_signal()
    _log.info("%s stopping", common.service)
    await server.enter_graceful_shutdown()
    if common.drain_seconds:
        await asyncio.sleep(common.drain_seconds)
    for hook in service.stop_intake:
        await hook()
    await server.stop(common.shutdown_grace_seconds)
    for hook in service.close:
        try:
            await hook()
        except Exception:
            _log.exception("error during shutdown")
    _log.info("%s stopped", common.service)
    shutdown_telemetry()

"""The start-up and shutdown sequence every service shares, around its own wiring.

Start: config → the dev switch (libs.dev_switch) → logging → telemetry → the service's `start` (pool, NATS, servicers, consumers)
→ the first readiness check → gRPC start → liveness SERVING, readiness as checked (re-checked
every few seconds, libs.readiness). SIGTERM: NOT_SERVING → drain pause → stop consuming → stop gRPC with
grace → the service's `close` (finish or hand back work, close NATS, then the pool) → flush
traces last, so the shutdown itself is traced.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import uvloop

from libs import shedding
from libs.config import CommonConfig, ConfigError
from libs.dev_switch import refusal
from libs.grpcx.server import GrpcServer
from libs.metrics import setup_metrics, shutdown_metrics
from libs.priority import RealtimeBoost, lower_priority, realtime_permitted, run_realtime
from libs.readiness import Check, ReadinessProbe
from libs.runtime import configure_logging, wait_for_stop_signal
from libs.telemetry import setup_telemetry, shutdown_telemetry

__all__ = ["Service", "Serving", "grpc_server", "run_main", "serve", "serve_on"]

_log = logging.getLogger("postwire")
# A stop hook that settles work by the grace itself (mta_worker) may take this long to record it.
_STOP_MARGIN_SECONDS = 1.5
# Every close hook together (NATS, the pool): a dependency that is away must not hold the exit.
# With the stop margin this stays inside the 5 s the manifests allow beyond drain + grace.
_CLOSE_SECONDS = 3.0


async def _bounded(hook: Callable[[], Awaitable[None]], timeout: float) -> None:
    try:
        await asyncio.wait_for(hook(), max(0.0, timeout))
    except TimeoutError:
        _log.warning("shutdown step %s cut off after its time", getattr(hook, "__qualname__", hook))
    except Exception:
        _log.exception("error during shutdown")


@dataclass
class Service:
    """What a service's wiring hands back: hooks run in shutdown order."""

    stop_intake: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # What readiness needs (libs.readiness): the service's own pool and NATS connection. Empty
    # (the edge) means ready once it listens.
    ready: list[Check] = field(default_factory=list)


class Serving(Protocol):
    """What the lifecycle below needs of a gRPC server (GrpcServer, ThreadedGrpcServer)."""

    async def start(self) -> None: ...
    async def set_ready(self, ready: bool) -> None: ...
    async def enter_graceful_shutdown(self) -> None: ...
    async def stop(self, grace: float) -> None: ...


ServerT = TypeVar("ServerT", bound=Serving)


def grpc_server(common: CommonConfig) -> GrpcServer:
    return GrpcServer(
        common.listen,
        internal_token=common.internal_token,
        max_connection_age=common.max_connection_age_seconds,
        max_connection_age_grace=common.max_connection_age_grace_seconds,
        service=common.service,
        max_in_flight=common.max_in_flight,
        max_in_flight_wait=common.max_in_flight_wait_seconds,
    )


async def serve(
    common: CommonConfig,
    env: Mapping[str, str],
    wire: Callable[[GrpcServer], Awaitable[Service]],
) -> None:
    await serve_on(common, env, grpc_server, wire)


async def serve_on(
    common: CommonConfig,
    env: Mapping[str, str],
    build: Callable[[CommonConfig], ServerT],
    wire: Callable[[ServerT], Awaitable[Service]],
) -> None:
    """`serve` with a server of the caller's making (the edge's thread server)."""
    refused = refusal(env, common.service)
    if refused:
        # One plain line on stderr and a non-zero exit, before anything is opened.
        print(refused, file=sys.stderr, flush=True)
        raise SystemExit(2)
    lower_priority(common.nice)  # first, so every thread started below inherits it
    _take_realtime(common)
    configure_logging(common.service, common.log_level)
    setup_telemetry(common.service, env)
    setup_metrics(common.service, common.metrics_listen)
    server = build(common)
    service = await wire(server)
    _settle_heap()
    # Checked before the port opens, so no probe ever sees SERVING against an unmigrated schema.
    readiness = ReadinessProbe(service.ready, server.set_ready)
    await readiness.check_once()
    await server.start()
    readiness.start()
    _log.info("%s serving on %s", common.service, common.listen)
    await wait_for_stop_signal()
    _log.info("%s stopping", common.service)
    await server.enter_graceful_shutdown()
    await readiness.stop()
    if common.drain_seconds:
        await asyncio.sleep(common.drain_seconds)
    # One budget for finishing work, so the whole stop fits in drain + grace + a few seconds to
    # close (what terminationGracePeriodSeconds allows); a hook past it is cancelled, and work it
    # left unacked comes back to another replica after AckWait.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + common.shutdown_grace_seconds
    for hook in service.stop_intake:
        await _bounded(hook, deadline + _STOP_MARGIN_SECONDS - loop.time())
    await server.stop(max(0.0, deadline - loop.time()))
    closed_by = loop.time() + _CLOSE_SECONDS
    for hook in service.close:
        await _bounded(hook, closed_by - loop.time())
    _log.info("%s stopped", common.service)
    shutdown_metrics()
    shutdown_telemetry()


# Young-generation collections every this many net allocations (CPython's default is 700): the
# send path allocates several hundred objects per message, most of them gone by the next turn.
_GC_YOUNG_THRESHOLD = 10_000


def _take_realtime(common: CommonConfig) -> None:
    """POSTWIRE_REALTIME_PRIORITY from now on ("always") or while the platform sheds load
    (libs.shedding, libs.priority.RealtimeBoost). One not permitted is a configuration error:
    run_main makes it one line and exit status 2."""
    priority = common.realtime_priority
    if priority <= 0:
        return
    refused = ConfigError(
        f"POSTWIRE_REALTIME_PRIORITY={priority}: not permitted;"
        f" {common.service} needs CAP_SYS_NICE (or an RLIMIT_RTPRIO that high) for it, or set it to 0"
    )
    if common.realtime_when == "always":
        try:
            run_realtime(priority)
        except PermissionError:
            raise refused from None
        return
    if not realtime_permitted(priority):
        raise refused
    boost = RealtimeBoost(priority, active=shedding.active)
    boost.run_settler(every=shedding.HOLD_SECONDS / 4)
    shedding.on_shedding(boost.signal)


def _settle_heap() -> None:
    """What start-up built (modules, protobuf descriptors, pools, handlers) lives as long as the
    process: frozen out of the cyclic collector, so its full collections stop walking those
    objects while callers wait (under overload they paused the edge and submission 20-170 ms,
    about 1 ms after: bench/README.md "A/B: overload refusals"), and young collections run less
    often (gc was ~4 % of mta_worker's and the router's CPU: "A/B: delivery-path CPU"). A test
    that runs `serve` in its own process freezes what it holds at that moment too: those objects
    were alive anyway, and only ones that later become cyclic garbage are kept."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, older, oldest)


def loop_factory(env: Mapping[str, str], default: str = "uvloop") -> Callable[[], asyncio.AbstractEventLoop]:
    """POSTWIRE_EVENT_LOOP: `uvloop` or `asyncio`, else the service's default. uvloop cut the
    services' CPU per message by a measured share (bench/README.md, session 8); the stdlib loop
    stays one setting away in case a dependency misbehaves on it."""
    choice = env.get("POSTWIRE_EVENT_LOOP", "").strip().lower() or default
    if choice == "asyncio":
        return asyncio.new_event_loop
    if choice == "uvloop":
        return uvloop.new_event_loop
    raise ConfigError(f"POSTWIRE_EVENT_LOOP: expected uvloop or asyncio, got {choice!r}")


def run_main(
    run: Callable[[Mapping[str, str]], Coroutine[Any, Any, None]], *, default_loop: str = "uvloop"
) -> None:
    """A service's process entry: a bad setting is one plain line on stderr and exit status 2,
    not a traceback (logging is not configured yet, and may be what is misconfigured)."""
    try:
        with asyncio.Runner(loop_factory=loop_factory(os.environ, default_loop)) as runner:
            runner.run(run(os.environ))
    except ConfigError as exc:
        print(f"postwire: configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None

"""A public gRPC port on grpc's thread server (`grpc.server`) instead of grpc.aio: the edge's.

Why: grpc.aio's server reads a new call only after several turns of its event loop (one call
request armed per method; each read goes loop → task → completion queue → poller thread →
loop again), so when the loop is busy forwarding, calls it has not read yet wait inside gRPC,
out of the load shedder's sight, and a refusal that costs microseconds comes back after
hundreds of milliseconds. Raising the edge's CPU priority did not change that (it is turns,
not CPU). The thread server reads calls on a thread of its own and hands each to a pool, where
forwarding is one blocking call with the GIL released while it waits; measured in
bench/README.md "A/B: threaded edge" (refusal p99 median 77.6 -> 24.5 ms over the whole bench,
CPU per forwarded call about the same). A refusal is sent from the reading thread itself.

What GrpcServer gives the other services, this gives the edge in thread form: health
(liveness SERVING while the process answers, readiness per `set_ready`), reflection, the
`rpc.server.duration` histogram, load shedding (RESOURCE_EXHAUSTED with RetryInfo, the same
status as libs.grpcx.overload), the caller's trace ids (an OpenTelemetry span when an exporter
is set) and every unexpected exception mapped to a status (libs.grpcx.status.status_for), never
UNKNOWN.

Threads are bounded: `max_in_flight` unary calls and `max_streams` server streams hold a pool
thread each; a few spare threads answer refusals and health checks while all of those are busy.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import server_interceptor as otel_server_interceptor

from libs import metrics, shedding
from libs.grpcx.call_metrics import attributes_of, server_code
from libs.grpcx.handlers import PerMethod, unary_stream_like, unary_unary_like
from libs.grpcx.overload import overloaded_status
from libs.grpcx.server import Undecodable, server_options, tolerant, undecodable_error
from libs.grpcx.status import status_for
from libs.grpcx.tracing import enter_ids, leave_ids
from libs.readiness import LIVENESS, READINESS
from libs.telemetry import recording

__all__ = ["Slots", "ThreadedGrpcServer"]

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_NEVER_SHED = ("/grpc.health.", "/grpc.reflection.")
# Pool threads beyond the call and stream bounds: health checks and reflection run on these when
# every admitted call holds a thread (refusals run on the thread that reads calls).
_SPARE_THREADS = 16


class Slots:
    """At most `limit` holders at once, across threads; no waiting line (a thread waiting for a
    slot would hold a pool thread, and the aio servers' line measured no better refusals)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._held = 0
        self._lock = threading.Lock()

    def full(self) -> bool:
        return self._held >= self.limit  # a racy read is fine: enter() decides

    def enter(self) -> bool:
        with self._lock:
            if self._held >= self.limit:
                return False
            self._held += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._held = max(0, self._held - 1)


class _OnCallingThread(ThreadPoolExecutor):
    """An executor that runs what it is given at once on the submitting thread (it never starts
    a thread of its own): for behaviours that only send a status."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        done: Future[Any] = Future()
        try:
            done.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # grpc reads the outcome from the future, as from a pool's
            done.set_exception(exc)
        return done


def _refused(path: str) -> None:
    """What every refusal records: its duration (none) and that the platform is shedding load."""
    shedding.note()
    metrics.rpc_server_duration.record(0.0, attributes_of(path, grpc.StatusCode.RESOURCE_EXHAUSTED))


class _Layer(grpc.ServerInterceptor):
    """One layer around every call, outermost first: the duration histogram, the shedder (a
    refused call costs nothing more), the caller's trace ids, and status mapping."""

    def __init__(self, service: str, calls: Slots, streams: Slots, *, ids: bool) -> None:
        refusal = overloaded_status(service, 0.25)
        self._calls = calls
        self._streams = streams
        self._ids = ids

        def refuse(_: Any, context: grpc.ServicerContext) -> Any:
            context.abort_with_status(refusal)

        # The shedder's refusal is a client-streaming handler that never reads the request (on the
        # wire a unary call is a stream of one message), run on the thread that read the call:
        # grpc's thread server runs a behaviour on its `experimental_thread_pool` when it has
        # one. So a refusal waits neither for a free pool thread nor for its request's bytes.
        refuse.experimental_thread_pool = _OnCallingThread()  # type: ignore[attr-defined]
        self._refuse = refuse
        self._refusal_handler: Handler = grpc.stream_unary_rpc_method_handler(refuse)
        self._handlers = PerMethod(self._wrap)
        self._decoding = PerMethod(_decoding)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        never_shed = details.method.startswith(_NEVER_SHED)
        if not never_shed and self._calls.full():
            # On the thread that reads calls: the refusal is decided before anything else runs.
            _refused(details.method)
            return self._refusal_handler
        handler = continuation(details)
        if handler is None:
            return None
        if never_shed:  # health and reflection: only undecodable bytes to answer for
            return self._decoding.get(handler, details.method)  # type: ignore[no-any-return]  # PerMethod is untyped
        return self._handlers.get(handler, details.method)  # type: ignore[no-any-return]  # as above

    def _wrap(self, handler: Any, path: str) -> Any:
        if handler.unary_unary is not None:
            inner_uu, calls = handler.unary_unary, self._calls

            def unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
                with self._admitted(calls, request, context, path):
                    return inner_uu(request, context)

            return unary_unary_like(handler, unary_unary)
        if handler.unary_stream is not None:
            inner_us, streams = handler.unary_stream, self._streams

            def unary_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                with self._admitted(streams, request, context, path):
                    yield from inner_us(request, context)

            return unary_stream_like(handler, unary_stream)
        return handler

    @contextmanager
    def _admitted(self, slots: Slots, request: Any, context: Any, path: str) -> Iterator[None]:
        """A slot for the call's life (or the refusal), its trace ids, its status, its duration."""
        started = time.perf_counter()
        if not slots.enter():
            _refused(path)
            self._refuse(request, context)
        token = enter_ids(context) if self._ids else None
        try:
            yield
        except Exception as exc:
            _abort_unless_aborted(context, exc)
            raise
        finally:
            if token is not None:
                leave_ids(token)
            slots.leave()
            elapsed = (time.perf_counter() - started) * 1000.0
            metrics.rpc_server_duration.record(elapsed, attributes_of(path, server_code(context, None)))


def _decoding(handler: Any, path: str) -> Any:
    """Bytes that do not parse are INVALID_ARGUMENT naming the message (libs.grpcx.server's
    rule), not grpc's INTERNAL "Exception deserializing request!" with a logged traceback."""
    decode = tolerant(handler.request_deserializer)
    if decode is None:
        return handler

    def checked(request: Any, context: Any) -> Any:
        if isinstance(request, Undecodable):
            context.abort_with_status(status_for(undecodable_error(request, path)))
        return request

    single = handler.unary_unary or handler.unary_stream  # health's Check and Watch
    if single is not None:
        like = unary_unary_like if handler.unary_unary is not None else unary_stream_like
        return like(
            handler,
            lambda request, context: single(checked(request, context), context),
            request_deserializer=decode,
        )
    if handler.stream_stream is not None:  # reflection
        inner_ss = handler.stream_stream
        return grpc.stream_stream_rpc_method_handler(
            lambda requests, context: inner_ss((checked(r, context) for r in requests), context),
            request_deserializer=decode,
            response_serializer=handler.response_serializer,
        )
    return handler


def _abort_unless_aborted(context: Any, exc: Exception) -> None:
    """An exception after `context.abort` is how grpc ends the call (its status is already set);
    any other is mapped like every server's (libs.grpcx.status.status_for)."""
    if context.code() is not None:
        return
    context.abort_with_status(status_for(exc))


class ThreadedGrpcServer:
    """The thread-server counterpart of libs.grpcx.server.GrpcServer, with the same lifecycle
    methods (coroutines, so libs.service_main drives either)."""

    def __init__(
        self,
        listen: str,
        *,
        service: str,
        max_in_flight: int,
        max_streams: int,
        max_connection_age: float = 300.0,
        max_connection_age_grace: float = 30.0,
    ) -> None:
        self.calls = Slots(max_in_flight)
        self.streams = Slots(max_streams)
        interceptors: list[grpc.ServerInterceptor] = [
            _Layer(service, self.calls, self.streams, ids=not recording())
        ]
        if recording():
            # Inside the shedder: a refused call records no span (as on the aio servers).
            interceptors.append(otel_server_interceptor())  # type: ignore[no-untyped-call]  # unannotated
        self._pool = ThreadPoolExecutor(
            max_workers=max_in_flight + max_streams + _SPARE_THREADS, thread_name_prefix=f"{service}-call"
        )
        self.server = grpc.server(
            self._pool,
            interceptors=interceptors,
            options=server_options(max_connection_age=max_connection_age, grace=max_connection_age_grace),
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._service_names: list[str] = [health.SERVICE_NAME]
        self._ready = False
        self._stopping = False
        self.port = self.server.add_insecure_port(listen)
        if self.port == 0:
            raise OSError(f"could not listen on {listen}")

    def reflect(self, full_name: str) -> None:
        """List a service in reflection and health that is served by a generic handler."""
        self._service_names.append(full_name)

    async def start(self) -> None:
        reflection.enable_server_reflection([*self._service_names, reflection.SERVICE_NAME], self.server)
        self.server.start()
        self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self.set_ready(self._ready)

    async def set_ready(self, ready: bool) -> None:
        if self._stopping:
            return
        self._ready = ready
        status = (
            health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in [READINESS, *self._service_names]:
            self.health.set(name, status)

    async def enter_graceful_shutdown(self) -> None:
        self._stopping = True
        self.health.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        done = self.server.stop(grace)
        await asyncio.to_thread(done.wait)
        self._pool.shutdown(wait=False, cancel_futures=True)

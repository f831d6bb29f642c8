"""Build a grpc.aio server with health, reflection, tracing and domain-error mapping."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from libs import shedding
from libs.errors import InvalidArgument
from libs.grpcx.call_metrics import ServerMetricsInterceptor
from libs.grpcx.context import Context
from libs.grpcx.handlers import PerMethod, unary_stream_like, unary_unary_like
from libs.grpcx.in_flight import InFlightLimit
from libs.grpcx.internal_auth import InternalAuth
from libs.grpcx.overload import LoadShedInterceptor
from libs.grpcx.status import abort_for
from libs.grpcx.tracing import enter_ids, leave_ids, recording_interceptor
from libs.readiness import LIVENESS, READINESS, Heartbeat
from libs.telemetry import recording

__all__ = [
    "MAX_MESSAGE_BYTES",
    "CallInterceptor",
    "GrpcServer",
    "Undecodable",
    "server_options",
    "tolerant",
    "undecodable_error",
]

# 25 MB of message after encoding, plus base64/proto overhead headroom.
MAX_MESSAGE_BYTES = 40 * 1024 * 1024

_log = logging.getLogger(__name__)


def server_options(*, max_connection_age: float = 300.0, grace: float = 30.0) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        # Recycle client connections so new replicas get traffic after an HPA scale-out; a stream
        # still open after the grace is cut (StreamEvents clients resume with their cursor).
        ("grpc.max_connection_age_ms", int(max_connection_age * 1000)),
        ("grpc.max_connection_age_grace_ms", int(grace * 1000)),
        # gRPC binds with SO_REUSEPORT by default: a second process on a taken port would start
        # without error and silently take part of the first one's calls.
        ("grpc.so_reuseport", 0),
    ]


class Undecodable:
    """Stands in for a request whose bytes did not parse, so the handler can answer
    INVALID_ARGUMENT; gRPC itself would answer UNKNOWN and log a traceback."""

    __slots__ = ("message_name",)

    def __init__(self, message_name: str) -> None:
        self.message_name = message_name


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:  # generic handlers (the edge) take raw bytes
        return None
    # The generated deserializer is `Message.FromString`; its class names the expected message.
    owner = getattr(deserializer, "__self__", None)
    name = getattr(getattr(owner, "DESCRIPTOR", None), "full_name", "the request message")

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        # DecodeError for bad wire format or invalid UTF-8 in a string field; RecursionError or
        # others for pathological nesting. All are the caller's bytes, never our bug.
        except Exception:
            return Undecodable(name)

    return deserialize


def undecodable_error(request: Undecodable, method: str) -> InvalidArgument:
    _log.info("request to %s does not decode as %s", method, request.message_name)
    return InvalidArgument(
        [("request", f"the request bytes do not decode as {request.message_name}")],
        f"the request bytes do not decode as {request.message_name}",
    )


# grpc's stubs type method handlers for the sync server; the aio server keeps coroutine functions
# and async generators in the same slots, so the handlers we wrap are held as Any.
# (Strings: grpc.RpcMethodHandler is generic only in the stubs.)
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"


class CallInterceptor(grpc.aio.ServerInterceptor):
    """What every call needs inside the load shedder, as one layer: internal methods require the
    internal token (libs.grpcx.internal_auth), the call runs under its trace ids when no exporter
    records spans (libs.grpcx.tracing), and every failure becomes a status with details, so
    nothing escapes as UNKNOWN. As three interceptors this was three coroutine layers per call and
    three handlers, closures and a deserializer rebuilt per call; here it is one layer, and each
    method's handler is built once (libs.grpcx.handlers.PerMethod)."""

    def __init__(self, auth: InternalAuth, *, ids: bool) -> None:
        self._auth = auth
        self._ids = ids
        self._handlers = PerMethod(self._wrap)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        if not self._auth.admits(handler_call_details):
            return self._auth.denied
        if shedding.heeded() and shedding.marked(handler_call_details.invocation_metadata):
            shedding.note()
        handler: Any = await continuation(handler_call_details)
        if handler is None:
            return None
        return self._handlers.get(handler, handler_call_details.method)  # type: ignore[no-any-return]  # see Handler

    def _wrap(self, handler: Any, method: str) -> Any:
        ids = self._ids
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: Context) -> Any:
                token = enter_ids(context) if ids else None
                try:
                    if isinstance(request, Undecodable):
                        raise undecodable_error(request, method)
                    return await inner_uu(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await abort_for(context, exc)
                finally:
                    if token is not None:
                        leave_ids(token)

            return unary_unary_like(
                handler, unary_unary, request_deserializer=tolerant(handler.request_deserializer)
            )
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                token = enter_ids(context) if ids else None
                try:
                    if isinstance(request, Undecodable):
                        raise undecodable_error(request, method)
                    async for item in inner_us(request, context):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await abort_for(context, exc)
                finally:
                    if token is not None:
                        leave_ids(token)

            return unary_stream_like(
                handler, unary_stream, request_deserializer=tolerant(handler.request_deserializer)
            )
        if handler.stream_stream is not None:  # reflection: no trace ids needed
            inner_ss = handler.stream_stream

            async def stream_stream(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
                async def checked() -> AsyncIterator[Any]:
                    async for request in requests:
                        if isinstance(request, Undecodable):
                            raise undecodable_error(request, method)
                        yield request

                try:
                    async for item in inner_ss(checked(), context):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await abort_for(context, exc)

            return grpc.stream_stream_rpc_method_handler(
                stream_stream,
                request_deserializer=tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler


class _Health(health.aio.HealthServicer):
    """The stock health service, except that liveness (the empty name) is computed at each call
    from the event loop's heartbeat: a loop that answers but no longer runs its timers is stuck."""

    def __init__(self, alive: Callable[[], bool]) -> None:
        super().__init__()
        self._alive = alive

    async def Check(  # the gRPC method name
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> health_pb2.HealthCheckResponse:
        if request.service == LIVENESS and not self._alive():
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
        return await super().Check(request, context)


class GrpcServer:
    """A server with the stock health service and reflection for the given services.

    Health: the empty name is liveness (libs.readiness.Heartbeat); `readiness` and every served
    service's name follow `set_ready` (libs.readiness.ReadinessProbe); both go NOT_SERVING for good
    at `enter_graceful_shutdown`.

    Every postwire.internal.v1 method it serves requires `internal_token` (see internal_auth).
    """

    def __init__(
        self,
        listen: str,
        *,
        internal_token: str,
        extra_interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
        max_connection_age: float = 300.0,
        max_connection_age_grace: float = 30.0,
        service: str = "postwire",
        max_in_flight: int = 64,
        max_in_flight_wait: float = 0.01,
    ) -> None:
        # POSTWIRE_MAX_IN_FLIGHT / _WAIT_MS: past them a call is refused (libs.grpcx.overload).
        self.in_flight = InFlightLimit(max_in_flight, max_wait=max_in_flight_wait)
        self.server = grpc.aio.server(
            interceptors=[
                # Outermost: it records the status the caller gets, after every mapping below.
                ServerMetricsInterceptor(),
                # Next: a refused call costs no span, no auth check, no handler.
                LoadShedInterceptor(self.in_flight, service=service),
                # With an exporter, OpenTelemetry's span (a denied call gets one too); without,
                # the call layer puts the ids in place itself.
                *([recording_interceptor()] if recording() else []),
                CallInterceptor(InternalAuth(internal_token), ids=not recording()),
                *extra_interceptors,
            ],
            options=server_options(max_connection_age=max_connection_age, grace=max_connection_age_grace),
        )
        self.heartbeat = Heartbeat()
        self.health = _Health(self.heartbeat.alive)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._service_names: list[str] = [health.SERVICE_NAME]
        self._ready = False
        self.port = self.server.add_insecure_port(listen)
        if self.port == 0:
            raise OSError(f"could not listen on {listen}")

    def add(self, register: Callable[[Any, grpc.aio.Server], None], servicer: Any, full_name: str) -> None:
        register(servicer, self.server)
        self._service_names.append(full_name)

    def reflect(self, full_name: str) -> None:
        """List a service in reflection and health that is served by a generic handler."""
        self._service_names.append(full_name)

    async def start(self) -> None:
        reflection.enable_server_reflection([*self._service_names, reflection.SERVICE_NAME], self.server)
        await self.server.start()
        self.heartbeat.start()
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self.set_ready(self._ready)

    async def set_ready(self, ready: bool) -> None:
        """Readiness for `readiness` and every served name (ignored once shutting down)."""
        self._ready = ready
        status = (
            health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in [READINESS, *self._service_names]:
            await self.health.set(name, status)

    async def enter_graceful_shutdown(self) -> None:
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        await self.server.stop(grace)
        await self.heartbeat.stop()

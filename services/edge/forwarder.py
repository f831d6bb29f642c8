"""A byte-level gRPC forwarder: one public address in front of the separate service processes.

It runs on grpc's thread server (libs.grpcx.threaded_server): each call is forwarded by one
blocking call on its pool thread. Requests and responses pass through undecoded; status codes,
messages and trailing metadata (where google.rpc details travel) are passed back unchanged, and
server-streaming calls stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn, TypeAlias

import grpc
from google.protobuf import descriptor_pool
from opentelemetry import propagate, trace

from libs import metrics, shedding
from libs.grpcx.call_metrics import rpc_attributes
from libs.grpcx.channel import open_forwarding_channel
from libs.telemetry import current_trace_context

__all__ = ["Forwarder"]

DEFAULT_DEADLINE = 60.0
# Set by gRPC itself for the next hop.
# shedding.KEY too: only the edge says the platform is shedding, never a caller.
_DROP = {"user-agent", "content-type", "te", shedding.KEY}
_TRACE = ("traceparent", "tracestate")

# Requests and responses stay serialized: the forwarder never decodes a message.
Context: TypeAlias = grpc.ServicerContext
UnaryHandler: TypeAlias = Callable[[bytes, Context], bytes]
StreamHandler: TypeAlias = Callable[[bytes, Context], Iterator[bytes]]


def _forwardable(metadata: Any) -> tuple[tuple[str, str | bytes], ...]:
    """The caller's metadata for the next hop, with the trace context the back end should
    continue. The edge's own span is only worth naming as the parent when it is recorded
    (an exporter is set); otherwise the caller's traceparent passes through as it came (same
    trace id, no propagator work), and a call without one gets the trace id the edge's span
    was given, so the edge's log lines and the back end's share it."""
    forwarded: list[tuple[str, str | bytes]] = []
    has_parent = False
    for key, value in metadata or ():
        if key in _DROP or key.startswith((":", "grpc-")):
            continue
        has_parent = has_parent or key == "traceparent"
        forwarded.append((key, value))
    span = trace.get_current_span()
    if span.is_recording():
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        forwarded = [(k, v) for k, v in forwarded if k not in _TRACE and k != "baggage"]
        forwarded += carrier.items()
    elif not has_parent and (traceparent := current_trace_context()):
        forwarded.append(("traceparent", traceparent))
    if shedding.active():
        forwarded.append(shedding.MARK)
    return tuple(forwarded)


def _client_attributes(path: str) -> dict[grpc.StatusCode, dict[str, str | int]]:
    # rpc.client.duration's attributes for each status, built once per method, not per call.
    return {code: rpc_attributes(path, code) for code in grpc.StatusCode}


class Forwarder(grpc.GenericRpcHandler):
    def __init__(self, routes: Mapping[str, str]) -> None:
        self._channels = {service: open_forwarding_channel(target) for service, target in routes.items()}
        self._pool = descriptor_pool.Default()
        self._handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        # gRPC asks on every call: the handler (multicallable and closure) is built once per
        # method. Only methods of the routed services are remembered, so the cache is bounded by
        # the descriptors, not by what callers send.
        path = handler_call_details.method  # "/package.Service/Method"
        handler = self._handlers.get(path)
        if handler is None:
            handler = self._handler(path)
            if handler is not None:
                self._handlers[path] = handler
        return handler

    def _handler(self, path: str) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        service, _, method = path.lstrip("/").partition("/")
        channel = self._channels.get(service)
        if channel is None:
            return None
        try:
            descriptor = self._pool.FindServiceByName(service).FindMethodByName(method)
        except KeyError:
            return None
        if descriptor is None or descriptor.client_streaming:
            return None
        if descriptor.server_streaming:
            return grpc.unary_stream_rpc_method_handler(self._unary_stream(channel, path))
        return grpc.unary_unary_rpc_method_handler(self._unary_unary(channel, path))

    @staticmethod
    def _unary_unary(channel: grpc.Channel, path: str) -> UnaryHandler:
        multicallable: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(path)
        attributes = _client_attributes(path)
        duration = metrics.rpc_client_duration

        def forward(request: bytes, context: Context) -> bytes:
            started = time.perf_counter()
            # Blocking on this pool thread (a future would add a hand-off to the channel's own
            # thread per call), so a caller that goes away does not cancel this hop: a unary
            # back-end call finishes within its deadline either way. wait_for_ready rides out a
            # backend restart (rolling deploy) within the deadline instead of failing at once.
            try:
                response: bytes
                response, _ = multicallable.with_call(
                    request,
                    metadata=_forwardable(context.invocation_metadata()),
                    timeout=_remaining(context) or DEFAULT_DEADLINE,
                    wait_for_ready=True,
                )
            except grpc.RpcError as exc:
                duration.record((time.perf_counter() - started) * 1000.0, attributes[_code(exc)])
                _pass_back(context, exc)
            duration.record((time.perf_counter() - started) * 1000.0, attributes[grpc.StatusCode.OK])
            return response

        return forward

    @staticmethod
    def _unary_stream(channel: grpc.Channel, path: str) -> StreamHandler:
        multicallable: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(path)

        def forward(request: bytes, context: Context) -> Iterator[bytes]:
            call = multicallable(
                request,
                metadata=_forwardable(context.invocation_metadata()),
                timeout=_remaining(context),
            )
            context.add_callback(lambda: _cancel(call))
            try:
                yield from call
            except grpc.RpcError as exc:
                _pass_back(context, exc)
            finally:
                call.cancel()

        return forward

    async def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


# grpc's thread server reports a call without a deadline as one ~infinitely far away, which a
# next hop given it as a timeout overflows into an instant DEADLINE_EXCEEDED.
_NO_DEADLINE_SECONDS = 365 * 24 * 3600.0


def _remaining(context: Context) -> float | None:
    """The caller's deadline for the next hop; None when the caller set none."""
    remaining = context.time_remaining()
    return None if remaining is None or remaining > _NO_DEADLINE_SECONDS else remaining


def _cancel(call: grpc.Call) -> None:
    call.cancel()


def _code(exc: grpc.RpcError) -> grpc.StatusCode:
    call: Any = exc  # a failed blocking call is both the error and its grpc.Call
    return call.code()  # type: ignore[no-any-return]


def _pass_back(context: Context, exc: grpc.RpcError) -> NoReturn:
    """The back end's status, message and trailing metadata (google.rpc details) unchanged."""
    call: Any = exc  # as in _code
    context.set_trailing_metadata(tuple(call.trailing_metadata() or ()))
    context.abort(_code(exc), call.details() or "")
    raise AssertionError("unreachable: abort raises")

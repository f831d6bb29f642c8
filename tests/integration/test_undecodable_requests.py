"""Bytes that do not parse into the request message are INVALID_ARGUMENT on every RPC of every
service, logged at most at INFO, and the channel keeps working."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from postwire.internal.v1 import policy_service_pb2, render_service_pb2  # noqa: F401
from postwire.v1 import (  # noqa: F401
    admin_service_pb2,
    domain_service_pb2,
    event_service_pb2,
    mail_service_pb2,
    suppression_service_pb2,
    template_service_pb2,
)

from libs.embedded.suite import Suite
from tests.conftest import INTERNAL_AUTH

PUBLIC = [
    "postwire.v1.MailService",
    "postwire.v1.TemplateService",
    "postwire.v1.EventService",
    "postwire.v1.AdminService",
    "postwire.v1.SuppressionService",
    "postwire.v1.DomainService",
]
INTERNAL = {"postwire.internal.v1.PolicyService": "policy", "postwire.internal.v1.RenderService": "template"}
BACKENDS = ("policy", "template", "events", "submission", "router", "mta_worker", "edge")

# A varint tag whose continuation bit promises more bytes than there are: not protobuf.
TRUNCATED = b"\xff\xff\xff"


def _methods(service: str) -> list[MethodDescriptor]:
    return list(descriptor_pool.Default().FindServiceByName(service).methods)


def _invalid_utf8(method: MethodDescriptor) -> bytes | None:
    """The request with its first top-level string field set to bytes that are not UTF-8."""
    for field in method.input_type.fields:
        if field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated:
            tag = (field.number << 3) | 2
            return bytes([tag]) + b"\x02\xc3\x28" if tag < 0x80 else None
    return None


async def _call(channel: grpc.aio.Channel, method: MethodDescriptor, payload: bytes) -> grpc.aio.AioRpcError:
    path = f"/{method.containing_service.full_name}/{method.name}"
    # Internal calls carry the services' token, so what is checked is the decoding, not the door.
    internal = method.containing_service.full_name.startswith("postwire.internal.")
    metadata = INTERNAL_AUTH if internal else (("authorization", "Bearer pw_x_y"),)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if method.server_streaming:
            async for _ in channel.unary_stream(path)(payload, metadata=metadata, timeout=10):
                pass
        else:
            await channel.unary_unary(path)(payload, metadata=metadata, timeout=10)
    return caught.value


async def _check_all(channel: grpc.aio.Channel, methods: list[MethodDescriptor]) -> None:
    for method in methods:
        payloads = [TRUNCATED]
        utf8 = _invalid_utf8(method)
        if utf8 is not None:
            payloads.append(utf8)
        for payload in payloads:
            error = await _call(channel, method, payload)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method.full_name, payload, error)
            assert "Traceback" not in (error.details() or "")
            assert "DecodeError" not in (error.details() or "")
            assert method.input_type.full_name in (error.details() or "")
        # The same channel still answers.
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_every_public_rpc_refuses_undecodable_bytes(suite: Suite, edge: grpc.aio.Channel) -> None:
    await _check_all(edge, [m for service in PUBLIC for m in _methods(service)])


async def test_every_internal_rpc_refuses_undecodable_bytes(suite: Suite) -> None:
    for service, backend in INTERNAL.items():
        async with grpc.aio.insecure_channel(suite.ports.addr(backend)) as channel:
            await _check_all(channel, _methods(service))


async def test_health_of_every_service_refuses_undecodable_bytes(suite: Suite) -> None:
    check = descriptor_pool.Default().FindServiceByName("grpc.health.v1.Health").FindMethodByName("Check")
    for backend in BACKENDS:
        async with grpc.aio.insecure_channel(suite.ports.addr(backend)) as channel:
            await _check_all(channel, [check])


def test_undecodable_bytes_are_not_logged_as_errors(suite: Suite) -> None:
    # Runs after the tests above in this module: their calls must have left no ERROR line or
    # traceback about decoding in any service's log.
    for backend in BACKENDS:
        log = (suite.data_dir / "logs" / f"{backend}.log").read_text(errors="replace")
        for line in log.splitlines():
            if "DecodeError" in line or "do not decode" in line:
                assert '"level": "info"' in line, (backend, line)

"""The edge's generic handler is asked for a handler on every call; it builds one per method
once (multicallable, descriptor lookup and closure), not one per call."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

# Imported for its descriptors: the forwarder reads methods from the default pool.
from postwire.v1 import mail_service_pb2  # noqa: F401

from services.edge.forwarder import Forwarder

MAIL = "postwire.v1.MailService"


@dataclass(frozen=True)
class _Details(grpc.HandlerCallDetails):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


async def test_one_handler_per_method_reused_for_every_call() -> None:
    forwarder = Forwarder({MAIL: "127.0.0.1:1"})
    try:
        first = forwarder.service(_Details(f"/{MAIL}/SendEmail"))
        again = forwarder.service(_Details(f"/{MAIL}/SendEmail"))
        other = forwarder.service(_Details(f"/{MAIL}/GetMessage"))
        assert first is not None and other is not None
        assert again is first
        assert other is not first
    finally:
        await forwarder.close()


async def test_unknown_services_and_methods_get_no_handler() -> None:
    forwarder = Forwarder({MAIL: "127.0.0.1:1"})
    try:
        assert forwarder.service(_Details(f"/{MAIL}/NoSuchMethod")) is None
        assert forwarder.service(_Details("/postwire.internal.v1.PolicyService/AdmitMessage")) is None
        assert forwarder.service(_Details("/nonsense")) is None
    finally:
        await forwarder.close()

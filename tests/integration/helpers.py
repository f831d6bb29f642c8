"""Small helpers shared by the integration tests: building requests, reading error details."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from postwire.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc, mail_service_pb2

from libs.capture import ReceivedMessage, SmtpSink
from libs.testing.polling import poll_until

__all__ = [
    "bad_request_fields",
    "create_database",
    "events_of",
    "host_port",
    "mail",
    "unique",
    "wait_for_events",
    "wait_for_mail",
]


def host_port(url: str) -> tuple[str, int]:
    """(host, port) of a scheme://[user@]host:port/... URL, for a fault proxy in front of it."""
    authority = url.partition("://")[2].partition("/")[0].rpartition("@")[2]
    host, _, port = authority.rpartition(":")
    return host.strip("[]"), int(port)


def create_database(server_url: str, prefix: str) -> str:
    """A new empty database on the server of `server_url` (the suite's); returns its URL. Fault
    tests run their own services on it, so their outages cannot touch the shared suite's data."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return server_url.rpartition("/")[0] + f"/{name}"


def unique(local: str = "user", domain: str = "example.com") -> str:
    return f"{local}+{uuid.uuid4().hex[:10]}@{domain}"


def mail(**fields: Any) -> mail_service_pb2.SendEmailRequest:
    """A valid request; keyword arguments replace fields (use from_=... for `from`)."""
    base: dict[str, Any] = {
        "from": {"address": "sender@example.com", "name": "Sender"},
        "to": [{"address": unique()}],
        "subject": "Hello",
        "text_body": "Hello there.",
    }
    if "from_" in fields:
        fields["from"] = fields.pop("from_")
    base.update(fields)
    return mail_service_pb2.SendEmailRequest(**base)


def bad_request_fields(exc: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status in the trailers"
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return fields


async def wait_for_mail(
    sink: SmtpSink, recipient: str, *, count: int = 1, timeout: float = 30
) -> list[ReceivedMessage]:
    async def probe() -> list[ReceivedMessage]:
        found = [m for m in sink.messages() if recipient in m.rcpt_tos]
        return found if len(found) >= count else []

    return await poll_until(probe, timeout=timeout, what=f"{count} message(s) for {recipient} at the sink")


async def events_of(channel: grpc.aio.Channel, metadata: Any, message_id: str) -> list[event_pb2.Event]:
    stub = event_service_pb2_grpc.EventServiceStub(channel)
    answer = await stub.ListEvents(
        event_service_pb2.ListEventsRequest(message_id=message_id, page_size=1000), metadata=metadata
    )
    return list(answer.events)


async def wait_for_events(
    channel: grpc.aio.Channel, metadata: Any, message_id: str, wanted: list[int], *, timeout: float = 30
) -> list[event_pb2.Event]:
    """Wait until the message's events include every type in `wanted` (with multiplicity)."""

    async def probe() -> list[event_pb2.Event]:
        events = await events_of(channel, metadata, message_id)
        types = [e.type for e in events]
        return events if all(types.count(t) >= wanted.count(t) for t in set(wanted)) else []

    return await poll_until(probe, timeout=timeout, what=f"events {wanted} for {message_id}")

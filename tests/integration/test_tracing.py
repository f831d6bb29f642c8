"""One SendEmail is one trace spanning every service, across gRPC calls and NATS messages."""

from __future__ import annotations

from google.protobuf import struct_pb2
from postwire.v1 import event_pb2, mail_service_pb2_grpc, template_service_pb2, template_service_pb2_grpc

from libs.testing.polling import poll_until
from tests.integration.helpers import mail, unique, wait_for_events


async def test_one_trace_with_edges_between_services(edge, tenant, otlp) -> None:
    template = await template_service_pb2_grpc.TemplateServiceStub(edge).CreateTemplate(
        template_service_pb2.CreateTemplateRequest(
            template={
                "name": f"traced-{unique('t').split('+')[1][:8]}",
                "subject": "Hi {{ n }}",
                "text_body": "x",
            }
        ),
        metadata=tenant.metadata,
    )
    variables = struct_pb2.Struct()
    variables.update({"n": "there"})
    answer = await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
        mail(subject="", text_body="", template={"id": template.template.id, "variables": variables}),
        metadata=tenant.metadata,
    )
    await wait_for_events(edge, tenant.metadata, answer.message_id, [event_pb2.EVENT_TYPE_DELIVERED])

    def trace_of_send() -> list:
        roots = [
            s
            for s in otlp.spans()
            if s.service == "postwire-edge"
            and s.name.endswith("MailService/SendEmail")
            and not s.parent_span_id
        ]
        return roots

    wanted = {
        ("postwire-edge", "postwire-submission"),
        ("postwire-submission", "postwire-policy"),
        ("postwire-submission", "postwire-router"),
        # Rendered at acceptance; the router builds from the stored parts (no second render).
        ("postwire-submission", "postwire-template"),
        ("postwire-router", "postwire-mta_worker"),
        ("postwire-mta_worker", "postwire-events"),
    }

    async def edges_seen() -> set[tuple[str, str]]:
        spans = otlp.spans()
        by_id = {s.span_id: s for s in spans}
        # The trace whose submission span belongs to this message's SendEmail.
        for root in trace_of_send():
            in_trace = [s for s in spans if s.trace_id == root.trace_id]
            found = {
                (by_id[s.parent_span_id].service, s.service)
                for s in in_trace
                if s.parent_span_id in by_id and by_id[s.parent_span_id].service != s.service
            }
            if wanted <= found:
                return found
        return set()

    found = await poll_until(edges_seen, timeout=30, what="a SendEmail trace crossing every service")
    assert wanted <= found
    assert ("postwire-router", "postwire-template") not in found

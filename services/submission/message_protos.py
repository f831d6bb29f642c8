"""Stored messages ↔ postwire.v1 protos, for the servicer's answers."""

from __future__ import annotations

from collections.abc import Sequence

from postwire.v1 import event_pb2, mail_service_pb2, message_pb2

from libs.mail.states import RecipientState
from libs.render_request import versions_from_json
from services.submission.messages import MessageRow

__all__ = ["get_message_response", "recipient_statuses", "replay_response", "send_response"]


def recipient_statuses(row: MessageRow) -> list[message_pb2.RecipientStatus]:
    out = []
    for r in row.recipients:
        status = message_pb2.RecipientStatus(
            address=r.address,
            kind=message_pb2.RecipientKind.ValueType(r.kind),
            state=r.state.proto,
            attempts=r.attempts,
            reason=r.failure_reason or "",
        )
        if r.last_code is not None:
            status.last_reply.code = r.last_code
            status.last_reply.enhanced_code = r.last_enhanced or ""
            status.last_reply.text = r.last_text or ""
        # Only a deferred recipient has a next attempt a caller can wait for.
        if r.next_attempt_time is not None and r.state is RecipientState.DEFERRED:
            status.next_attempt_time.FromDatetime(r.next_attempt_time)
        status.update_time.FromDatetime(r.update_time)
        out.append(status)
    return out


def send_response(
    message_id: str, recipients: Sequence[tuple[str, int, RecipientState]]
) -> mail_service_pb2.SendEmailResponse:
    response = mail_service_pb2.SendEmailResponse(message_id=message_id)
    for address, kind, state in recipients:
        response.recipients.add(
            address=address, kind=message_pb2.RecipientKind.ValueType(kind), state=state.proto
        )
    return response


def replay_response(row: MessageRow) -> mail_service_pb2.SendEmailResponse:
    """The first call's answer as it stands now: each recipient's current state."""
    return mail_service_pb2.SendEmailResponse(message_id=row.id, recipients=recipient_statuses(row))


def get_message_response(
    row: MessageRow, timeline: Sequence[event_pb2.Event]
) -> mail_service_pb2.GetMessageResponse:
    stored = mail_service_pb2.SendEmailRequest.FromString(row.request)
    message = message_pb2.Message(
        id=row.id,
        stream=row.stream,
        subject=stored.subject,
        tags=list(stored.tags),
        metadata=dict(stored.metadata),
        recipients=recipient_statuses(row),
        rfc822_message_id=row.rfc822_message_id or "",
        template_versions=versions_from_json(row.template_versions),
        sandbox=row.sandbox,
    )
    getattr(message, "from").CopyFrom(getattr(stored, "from"))
    message.create_time.FromDatetime(row.create_time)
    if row.send_time is not None:
        message.send_time.FromDatetime(row.send_time)
    response = mail_service_pb2.GetMessageResponse(message=message, timeline=timeline)
    response.read_time.GetCurrentTime()
    return response

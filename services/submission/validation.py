"""Checks a SendEmailRequest before anything is stored; pure, no I/O.

Every problem is reported at once as (field path, description), so a caller fixes a request in one
round trip. Anything that would reach a header is checked for CR, LF and other control characters
here, before MIME building, because header injection is a correctness bug, not a formatting one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from google.protobuf import struct_pb2
from postwire.v1 import mail_service_pb2, message_pb2

from libs.errors import InvalidArgument
from libs.locales import locale_problem
from libs.mail.addresses import AddressError, has_unsafe_chars, normalize_address
from libs.mail.filenames import is_blocked_filename
from libs.mail.headers import header_name_problem
from libs.mail.stream_names import name_problem
from libs.request_ids import key_problem

__all__ = ["BATCH_LIMITS", "LIMITS", "ValidatedSend", "check_batch_send_times", "validate_batch", "validate_send"]


@dataclass(frozen=True, slots=True)
class Limits:
    max_recipients: int = 50
    max_reply_to: int = 10
    max_subject: int = 998
    max_name: int = 256
    max_headers: int = 50
    max_header_value: int = 998
    max_attachments: int = 100
    max_filename: int = 255
    max_message_bytes: int = 25 * 1024 * 1024
    max_tags: int = 10
    max_metadata: int = 20
    max_metadata_value: int = 512
    max_variables_bytes: int = 256 * 1024
    max_variables_depth: int = 32
    max_schedule_ahead: timedelta = timedelta(days=30)
    max_schedule_behind: timedelta = timedelta(minutes=5)


LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_messages: int = 1_000
    max_recipients: int = 1_000  # across every message's to, cc and bcc
    max_bytes: int = 40 * 1024 * 1024  # the serialised request; gRPC refuses more on the wire


BATCH_LIMITS = BatchLimits()
DEFAULT_STREAM = "transactional"

_TAG = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_META_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}$")
_CONTENT_ID = re.compile(r"^[A-Za-z0-9._\-@$]{1,128}$")


@dataclass(frozen=True, slots=True)
class ValidatedSend:
    """The request with addresses normalised, plus what later steps need."""

    request: mail_service_pb2.SendEmailRequest
    recipients: tuple[tuple[str, int], ...]  # (address, RecipientKind) in request order
    stream: str


def _struct_depth(value: struct_pb2.Value | struct_pb2.Struct, depth: int = 1) -> int:
    if isinstance(value, struct_pb2.Struct):
        return max((_struct_depth(v, depth + 1) for v in value.fields.values()), default=depth)
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return _struct_depth(value.struct_value, depth)
    if kind == "list_value":
        return max((_struct_depth(v, depth + 1) for v in value.list_value.values), default=depth)
    return depth


def _text_problem(value: str, *, limit: int) -> str | None:
    if len(value) > limit:
        return f"must be at most {limit} characters (got {len(value)})"
    return has_unsafe_chars(value)


def _send_time_problem(request: mail_service_pb2.SendEmailRequest, now: datetime) -> str | None:
    if not request.HasField("send_time"):
        return None
    when = request.send_time.ToDatetime(tzinfo=now.tzinfo)
    if when < now - LIMITS.max_schedule_behind:
        return "is more than 5 minutes in the past"
    if when > now + LIMITS.max_schedule_ahead:
        return "is more than 30 days ahead"
    return None


def check_send_time(request: mail_service_pb2.SendEmailRequest, *, now: datetime) -> None:
    """The time-dependent check, kept apart so that a replay (answered before it) never fails a
    check the first call passed."""
    problem = _send_time_problem(request, now)
    if problem:
        raise InvalidArgument([("send_time", problem)])


def validate_send(
    request: mail_service_pb2.SendEmailRequest, *, now: datetime | None = None
) -> ValidatedSend:
    """Return the normalised request, or raise InvalidArgument listing every violation.

    Stateless unless `now` is given, which adds the send_time window to the same list."""
    v: list[tuple[str, str]] = []
    out = mail_service_pb2.SendEmailRequest()
    out.CopyFrom(request)

    def check_mailbox(
        field: str,
        box: message_pb2.EmailAddress,
        target: message_pb2.EmailAddress,
        *,
        utf8_local: bool = True,
    ) -> str | None:
        problem = _text_problem(box.name, limit=LIMITS.max_name)
        if problem:
            v.append((f"{field}.name", f"display name {problem}"))
        try:
            normalized = normalize_address(box.address, utf8_local=utf8_local)
        except AddressError as exc:
            v.append((f"{field}.address" if box.address else field, str(exc)))
            return None
        target.address = normalized
        return normalized

    sender = getattr(request, "from")
    if not request.HasField("from") or not sender.address:
        v.append(("from.address", "a sender address is required"))
    else:
        # The From address is the DKIM and DMARC identity, and verifiers without RFC 6532 support
        # would reject or mangle a UTF-8 one; only recipients and Reply-To may carry UTF-8.
        check_mailbox("from", sender, getattr(out, "from"), utf8_local=False)

    recipients: list[tuple[str, int]] = []
    seen: set[str] = set()
    for name, kind in (
        ("to", message_pb2.RECIPIENT_KIND_TO),
        ("cc", message_pb2.RECIPIENT_KIND_CC),
        ("bcc", message_pb2.RECIPIENT_KIND_BCC),
    ):
        for i, box in enumerate(getattr(request, name)):
            normalized = check_mailbox(f"{name}[{i}]", box, getattr(out, name)[i])
            if normalized is None:
                continue
            if normalized.lower() in seen:
                v.append((f"{name}[{i}].address", "duplicate recipient"))
                continue
            seen.add(normalized.lower())
            recipients.append((normalized, kind))
    total = len(request.to) + len(request.cc) + len(request.bcc)
    if total == 0:
        v.append(("to", "at least one recipient in to, cc or bcc is required"))
    elif total > LIMITS.max_recipients:
        v.append(("to", f"at most {LIMITS.max_recipients} recipients across to, cc and bcc (got {total})"))

    if len(request.reply_to) > LIMITS.max_reply_to:
        v.append(("reply_to", f"at most {LIMITS.max_reply_to} reply-to addresses"))
    for i, box in enumerate(request.reply_to):
        check_mailbox(f"reply_to[{i}]", box, out.reply_to[i])

    has_template = request.HasField("template")
    has_body = bool(request.text_body or request.html_body)
    if has_template and has_body:
        v.append(("template", "give either text_body/html_body or a template, not both"))
    elif not has_template and not has_body:
        v.append(("text_body", "one of text_body, html_body or template is required"))
    if has_template:
        ref = request.template
        if not ref.id and not ref.name:
            v.append(("template.id", "template id or name is required"))
        if ref.version < 0:
            v.append(("template.version", "must be 0 (latest) or a positive version"))
        if ref.locale and locale_problem(ref.locale):
            v.append(("template.locale", str(locale_problem(ref.locale))))
        if ref.HasField("variables"):
            size = ref.variables.ByteSize()
            if size > LIMITS.max_variables_bytes:
                v.append(("template.variables", f"at most {LIMITS.max_variables_bytes} bytes (got {size})"))
            elif _struct_depth(ref.variables) > LIMITS.max_variables_depth:
                v.append(("template.variables", f"nested deeper than {LIMITS.max_variables_depth} levels"))

    if request.subject:
        problem = _text_problem(request.subject, limit=LIMITS.max_subject)
        if problem:
            v.append(("subject", f"subject {problem}"))
    elif not has_template:
        v.append(("subject", "a subject is required"))

    if len(request.headers) > LIMITS.max_headers:
        v.append(("headers", f"at most {LIMITS.max_headers} custom headers (got {len(request.headers)})"))
    lowered_names: set[str] = set()
    for name, value in request.headers.items():
        field = f'headers["{name}"]'
        problem = header_name_problem(name)
        if problem:
            v.append((field, problem))
            continue
        if name.lower() in lowered_names:
            v.append((field, "duplicate header name (names are case-insensitive)"))
        lowered_names.add(name.lower())
        problem = _text_problem(value, limit=LIMITS.max_header_value)
        if problem:
            v.append((field, f"header value {problem}"))

    size = len(request.text_body.encode()) + len(request.html_body.encode())
    if len(request.attachments) > LIMITS.max_attachments:
        v.append(
            ("attachments", f"at most {LIMITS.max_attachments} attachments (got {len(request.attachments)})")
        )
    for i, att in enumerate(request.attachments):
        field = f"attachments[{i}]"
        if not att.filename:
            v.append((f"{field}.filename", "a filename is required"))
        else:
            problem = _text_problem(att.filename, limit=LIMITS.max_filename)
            if problem:
                v.append((f"{field}.filename", f"filename {problem}"))
            elif is_blocked_filename(att.filename):
                v.append((f"{field}.filename", "executable attachments are not allowed"))
        if att.content_type and not _CONTENT_TYPE.fullmatch(att.content_type):
            v.append((f"{field}.content_type", "must be a MIME type 'type/subtype' without parameters"))
        if att.content_id and not _CONTENT_ID.fullmatch(att.content_id):
            v.append((f"{field}.content_id", "letters, digits and '._-@$' only, at most 128 characters"))
        # Base64 grows content by 4/3 on the wire; the limit is on the encoded message.
        size += (len(att.content) + 2) // 3 * 4
    if size > LIMITS.max_message_bytes:
        v.append(
            (
                "attachments",
                f"message is {size} bytes after encoding; the limit is {LIMITS.max_message_bytes}",
            )
        )

    if len(request.tags) > LIMITS.max_tags:
        v.append(("tags", f"at most {LIMITS.max_tags} tags"))
    for i, tag in enumerate(request.tags):
        if not _TAG.fullmatch(tag):
            v.append((f"tags[{i}]", "1-64 characters: letters, digits and '_.:-'"))
    if len(request.metadata) > LIMITS.max_metadata:
        v.append(("metadata", f"at most {LIMITS.max_metadata} entries"))
    for key, value in request.metadata.items():
        if not _META_KEY.fullmatch(key):
            v.append((f'metadata["{key}"]', "keys are 1-64 characters: letters, digits and '_.-'"))
            continue
        problem = _text_problem(value, limit=LIMITS.max_metadata_value)
        if problem:
            v.append((f'metadata["{key}"]', f"value {problem}"))

    stream = request.stream or DEFAULT_STREAM
    problem = name_problem(stream)
    if problem:
        v.append(("stream", problem))
    out.stream = stream
    problem = request.unsubscribe_group and name_problem(request.unsubscribe_group)
    if problem:
        v.append(("unsubscribe_group", problem))

    if now is not None and (problem := _send_time_problem(request, now)):
        v.append(("send_time", problem))

    if request.idempotency_key and (problem := key_problem(request.idempotency_key)):
        v.append(("idempotency_key", problem))

    if v:
        raise InvalidArgument(v)
    return ValidatedSend(request=out, recipients=tuple(recipients), stream=stream)


def _in_message(i: int, exc: InvalidArgument) -> list[tuple[str, str]]:
    return [(f"messages[{i}].{field}", text) for field, text in exc.violations]


def validate_batch(request: mail_service_pb2.SendBatchRequest) -> list[ValidatedSend]:
    """Every message checked with SendEmail's rules, violations named `messages[i].<field>`, plus
    the batch's own limits; one bad message refuses the batch. Stateless like validate_send."""
    v: list[tuple[str, str]] = []
    count = len(request.messages)
    if count == 0:
        v.append(("messages", "at least one message is required"))
    elif count > BATCH_LIMITS.max_messages:
        v.append(("messages", f"at most {BATCH_LIMITS.max_messages} messages per batch (got {count})"))
    size = request.ByteSize()
    if size > BATCH_LIMITS.max_bytes:
        v.append(("messages", f"the batch is {size} bytes; the limit is {BATCH_LIMITS.max_bytes}"))
    if v:
        # Checking a thousand messages more would not change the answer.
        raise InvalidArgument(v)
    validated: list[ValidatedSend] = []
    keys: dict[str, int] = {}
    for i, message in enumerate(request.messages):
        try:
            validated.append(validate_send(message))
        except InvalidArgument as exc:
            v.extend(_in_message(i, exc))
        key = message.idempotency_key
        if key and key in keys:
            v.append((f"messages[{i}].idempotency_key", f"repeats messages[{keys[key]}].idempotency_key"))
        keys.setdefault(key, i)
    total = sum(len(m.to) + len(m.cc) + len(m.bcc) for m in request.messages)
    if total > BATCH_LIMITS.max_recipients:
        v.append(
            ("messages", f"at most {BATCH_LIMITS.max_recipients} recipients across the batch (got {total})")
        )
    if v:
        raise InvalidArgument(v)
    return validated


def check_batch_send_times(
    messages: Sequence[tuple[int, mail_service_pb2.SendEmailRequest]], *, now: datetime
) -> None:
    """check_send_time for the (index, message) pairs a batch will store, each violation named in
    its message."""
    v: list[tuple[str, str]] = []
    for i, message in messages:
        if problem := _send_time_problem(message, now):
            v.append((f"messages[{i}].send_time", problem))
    if v:
        raise InvalidArgument(v)

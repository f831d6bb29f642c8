"""An executable attachment is refused under every spelling a receiver would turn back into an
executable: Windows drops trailing dots and spaces and the `::$DATA` stream suffix, NTFS reads
`name:stream` as a stream of `name`, and mail clients strip or replace characters Windows forbids."""

from __future__ import annotations

import grpc
import pytest
from postwire.v1 import mail_service_pb2_grpc

from tests.integration.helpers import bad_request_fields, mail, unique

DISGUISED = [
    "evil.exe.",
    "evil.exe   ",
    "evil.exe::$DATA",
    "evil.exe. . ",
    "EvIl.ExE",
    "evil.EXE.. ",
    "evil.exe:stream",
    "evil.exe::$DATA. ",
    "evil.exe:stream:$DATA",
    "notes.txt:evil.exe",
    "evil.exe\u3000",
    "evil.exe\t",
    "evil.js.",
    "evil.vbs ",
    "evil.scr::$DATA",
    'evil.exe"',
    "evil.ex?e",
    "evil.exe*",
    "dir\\evil.exe\\",
    "dir/evil.exe/",
    "evil.\uff45\uff58\uff45",  # fullwidth "exe", folded to ASCII by NFKC
]

HARMLESS = ["report.pdf", "report.exe.pdf", "notes.txt.", "Meeting 10:30.pdf", "exe", "my.exercise.docx"]


async def test_every_disguised_executable_name_is_refused_by_its_index(edge, tenant, smtp_sink) -> None:
    rcpt = unique()
    attachments = [{"filename": name, "content": b"MZ"} for name in DISGUISED]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
            mail(to=[{"address": rcpt}], attachments=attachments), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    refused = {field for field in bad_request_fields(caught.value)}
    missed = [name for i, name in enumerate(DISGUISED) if f"attachments[{i}].filename" not in refused]
    assert missed == []
    assert not [m for m in smtp_sink.messages() if rcpt in m.rcpt_tos]


async def test_names_that_only_look_alike_are_accepted(edge, tenant) -> None:
    attachments = [{"filename": name, "content": b"%PDF"} for name in HARMLESS]
    sent = await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
        mail(attachments=attachments), metadata=tenant.metadata
    )
    assert sent.message_id

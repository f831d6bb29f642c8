"""build_mime: what a receiving mail client parses out of the bytes Postwire sends."""

from __future__ import annotations

import email
import email.policy
import io
import random
import re
import string
from datetime import UTC, datetime
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.mime.nonmultipart import MIMENonMultipart

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from postwire.v1 import mail_service_pb2

from libs.mail.parts import Parts
from services.router import mime
from services.router.mime import BuiltMessage, build_mime

NOW = datetime(2025, 6, 1, 12, 30, 15, tzinfo=UTC)
MESSAGE_ID = "msg_01HZX3K8"
HOSTNAME = "mx.postwire.test"

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 4
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(255, -1, -1)) * 3
TEXT = "Hello Ada,\n\nYour order #42 has shipped.\nGrüße — 你好 ✓\n"
HTML = "<html><body><p>Hello <b>Ada</b>,</p><p>Grüße — 你好 ✓</p></body></html>"


def make_request() -> mail_service_pb2.SendEmailRequest:
    request = mail_service_pb2.SendEmailRequest()
    sender = getattr(request, "from")
    sender.address = "billing@example.com"
    sender.name = "Acme Billing"
    request.to.add(address="ada@example.org", name="Ada Lovelace")
    request.to.add(address="zoe@example.net", name="Zoë Müller")
    request.cc.add(address="carol@example.org")
    request.bcc.add(address="hidden-audit@example.org", name="Hidden Auditor")
    request.reply_to.add(address="support@example.com", name="Acme Support")
    request.headers["X-Campaign"] = "spring"
    request.headers["X-Season"] = "Frühling"
    return request


def build(
    request: mail_service_pb2.SendEmailRequest | None = None,
    *,
    subject: str = "Your receipt — Grüße ✓",
    text: str = TEXT,
    html: str = HTML,
) -> BuiltMessage:
    return build_mime(
        make_request() if request is None else request,
        Parts(subject=subject, text_body=text, html_body=html),
        message_id=MESSAGE_ID,
        hostname=HOSTNAME,
        now=NOW,
    )


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def decoded_text(part: EmailMessage) -> str:
    # The wire form uses CRLF line ends; a client hands the text over with plain newlines.
    return part.get_content().replace("\r\n", "\n")


def test_address_headers() -> None:
    message = parse(build().data)
    sender = message["From"].addresses
    assert [(a.display_name, a.addr_spec) for a in sender] == [("Acme Billing", "billing@example.com")]
    assert [(a.display_name, a.addr_spec) for a in message["To"].addresses] == [
        ("Ada Lovelace", "ada@example.org"),
        ("Zoë Müller", "zoe@example.net"),
    ]
    assert [a.addr_spec for a in message["Cc"].addresses] == ["carol@example.org"]
    assert [(a.display_name, a.addr_spec) for a in message["Reply-To"].addresses] == [
        ("Acme Support", "support@example.com")
    ]


def test_bcc_never_appears_in_the_message() -> None:
    built = build()
    assert b"bcc" not in built.data.lower()
    assert b"hidden-audit" not in built.data
    assert b"Hidden Auditor" not in built.data
    assert parse(built.data)["Bcc"] is None


def test_bcc_only_message_has_no_recipient_headers() -> None:
    request = make_request()
    request.ClearField("to")
    request.ClearField("cc")
    built = build(request)
    message = parse(built.data)
    assert message["To"] is None
    assert message["Cc"] is None
    assert b"hidden-audit" not in built.data


def test_subject_round_trips_unicode() -> None:
    subject = "Your receipt — Grüße, 你好 ✓ 🎉"
    assert parse(build(subject=subject).data)["Subject"] == subject


def test_long_subject_with_spaces_round_trips() -> None:
    subject = " ".join(f"word{i}" for i in range(150))
    built = build(subject=subject)
    assert parse(built.data)["Subject"] == subject
    assert max(len(line) for line in built.data.split(b"\r\n")) <= 78


def test_date_and_ids() -> None:
    built = build()
    message = parse(built.data)
    assert message["Date"].datetime == NOW
    assert message["Message-ID"] == f"<{MESSAGE_ID}@{HOSTNAME}>"
    assert built.rfc822_message_id == f"<{MESSAGE_ID}@{HOSTNAME}>"
    assert message["X-Postwire-Message-Id"] == MESSAGE_ID
    assert message["MIME-Version"] == "1.0"
    assert built.envelope_from == "billing@example.com"


def test_custom_headers_are_present() -> None:
    message = parse(build().data)
    assert message["X-Campaign"] == "spring"
    assert message["X-Season"] == "Frühling"


def test_text_and_html_alternatives() -> None:
    message = parse(build().data)
    assert message.get_content_type() == "multipart/alternative"
    plain, html = message.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    assert decoded_text(plain) == TEXT
    assert decoded_text(html) == HTML


def test_text_only_and_html_only_are_single_parts() -> None:
    text_only = parse(build(html="").data)
    assert text_only.get_content_type() == "text/plain"
    assert decoded_text(text_only) == TEXT
    html_only = parse(build(text="").data)
    assert html_only.get_content_type() == "text/html"
    assert decoded_text(html_only) == HTML


def test_attachments() -> None:
    request = make_request()
    request.attachments.add(filename="report.pdf", content_type="application/pdf", content=PDF)
    request.attachments.add(filename="résumé 2025.pdf", content_type="application/pdf", content=b"%PDF-1.4 r")
    request.attachments.add(filename="data.bin", content=b"\x00\x01\x02")
    message = parse(build(request).data)

    assert message.get_content_type() == "multipart/mixed"
    body = next(message.iter_parts())
    assert body.get_content_type() == "multipart/alternative"
    attachments = list(message.iter_attachments())
    assert [(a.get_filename(), a.get_content_type(), a.get_content_disposition()) for a in attachments] == [
        ("report.pdf", "application/pdf", "attachment"),
        ("résumé 2025.pdf", "application/pdf", "attachment"),
        ("data.bin", "application/octet-stream", "attachment"),
    ]
    assert [a.get_content() for a in attachments] == [PDF, b"%PDF-1.4 r", b"\x00\x01\x02"]


def test_inline_image_sits_in_multipart_related() -> None:
    request = make_request()
    request.attachments.add(
        filename="logo.png", content_type="image/png", content=PNG, content_id="logo@acme"
    )
    html = '<p>Hi</p><img src="cid:logo@acme">'
    message = parse(build(request, html=html).data)

    assert message.get_content_type() == "multipart/related"
    alternative, image = message.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    assert [decoded_text(p) for p in alternative.iter_parts()] == [TEXT, html]
    assert image.get_content_type() == "image/png"
    assert image["Content-ID"] == "<logo@acme>"
    assert image.get_content_disposition() == "inline"
    assert image.get_filename() == "logo.png"
    assert image.get_content() == PNG


def test_inline_image_and_attachment_together() -> None:
    request = make_request()
    request.attachments.add(
        filename="logo.png", content_type="image/png", content=PNG, content_id="logo@acme"
    )
    request.attachments.add(filename="report.pdf", content_type="application/pdf", content=PDF)
    message = parse(build(request).data)
    assert message.get_content_type() == "multipart/mixed"
    related, attachment = message.iter_parts()
    assert related.get_content_type() == "multipart/related"
    assert [p.get_content_type() for p in related.iter_parts()] == ["multipart/alternative", "image/png"]
    assert attachment.get_filename() == "report.pdf"
    assert attachment.get_content() == PDF


def test_wire_format_line_ends_and_lengths() -> None:
    text = "lone CR\rhere\r\nCRLF\nLF\n" + "long line " * 300 + "\n" + "x" * 2500 + "\n"
    html = "<p>" + "<span>html</span>" * 200 + "</p>\r<p>after lone CR</p>"
    request = make_request()
    request.attachments.add(filename="report.pdf", content_type="application/pdf", content=PDF * 20)
    built = build(request, subject=" ".join(["Grüße"] * 60), text=text, html=html)
    data = built.data

    assert re.search(rb"\r(?!\n)", data) is None, "lone CR on the wire"
    assert re.search(rb"(?<!\r)\n", data) is None, "bare LF on the wire"
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    assert data.isascii(), "8-bit data needs SMTPUTF8/8BITMIME; everything must be encoded"

    plain, html_part = next(parse(data).iter_parts()).iter_parts()
    assert decoded_text(plain) == text.replace("\r\n", "\n").replace("\r", "\n")
    assert decoded_text(html_part) == html.replace("\r", "\n")


def test_body_lines_starting_with_a_dot_round_trip() -> None:
    text = ".\n..\n.hidden line\nnormal\n. \nFrom the start\n"
    plain, _ = parse(build(text=text).data).iter_parts()
    assert decoded_text(plain) == text


def test_idn_sender_domain_is_sent_as_a_labels() -> None:
    request = make_request()
    getattr(request, "from").address = "noreply@bücher.example"
    request.to[0].address = "ada@münchen.example"
    built = build(request)
    message = parse(built.data)
    assert [a.addr_spec for a in message["From"].addresses] == ["noreply@xn--bcher-kva.example"]
    assert message["To"].addresses[0].addr_spec == "ada@xn--mnchen-3ya.example"
    assert built.envelope_from == "noreply@xn--bcher-kva.example"
    assert b"xn--bcher-kva.example" in built.data


def test_top_level_headers_are_exactly_the_expected_set() -> None:
    message = parse(build().data)
    assert sorted(message.keys()) == sorted(
        [
            "From",
            "To",
            "Cc",
            "Reply-To",
            "Subject",
            "Date",
            "Message-ID",
            "X-Postwire-Message-Id",
            "X-Campaign",
            "X-Season",
            "MIME-Version",
            "Content-Type",
        ]
    )
    assert message.defects == []


# --- property: no header injection, subject round trip -------------------------------------------------------

_PRINTABLE = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
# Leading/trailing whitespace is not significant in an unstructured header and is not kept by parsers.
_SUBJECT = st.text(_PRINTABLE, min_size=1, max_size=60).filter(lambda s: s == s.strip() and s != "")
_NAME = st.text(_PRINTABLE, max_size=60)
_EXPECTED_HEADERS = sorted(
    ["From", "To", "Subject", "Date", "Message-ID", "X-Postwire-Message-Id", "MIME-Version", "Content-Type"]
)


@settings(max_examples=250, deadline=None, database=None)
@given(subject=_SUBJECT, sender_name=_NAME, rcpt_name=_NAME)
def test_unicode_subject_and_names_never_inject_headers(
    subject: str, sender_name: str, rcpt_name: str
) -> None:
    request = mail_service_pb2.SendEmailRequest()
    sender = getattr(request, "from")
    sender.address = "billing@example.com"
    sender.name = sender_name
    request.to.add(address="ada@example.org", name=rcpt_name)

    built = build(request, subject=subject, text="hi", html="<p>hi</p>")
    message = parse(built.data)

    assert sorted(message.keys()) == _EXPECTED_HEADERS
    assert message["Subject"] == subject
    assert [a.addr_spec for a in message["From"].addresses] == ["billing@example.com"]
    assert [a.addr_spec for a in message["To"].addresses] == ["ada@example.org"]
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", built.data) is None


def test_long_unbroken_header_text_stays_within_998_octets_and_round_trips() -> None:
    request = make_request()
    request.headers["X-Ref"] = "r" * 998
    request.to[0].name = "😀" * 256
    built = build(request, subject="a" * 998)
    assert max(len(line) for line in built.data.split(b"\r\n")) <= 998
    parsed = parse(built.data)
    assert parsed["Subject"] == "a" * 998
    assert parsed["X-Ref"] == "r" * 998


def test_subject_with_a_long_word_and_encoded_word_lookalike_round_trip() -> None:
    for subject in ("x" * 100 + " " + "y" * 100, "=?utf-8?q?hi?="):
        assert parse(build(subject=subject).data)["Subject"] == subject


# --- internationalised local parts (RFC 6532) --------------------------------------------------------------


def parse_utf8(data: bytes) -> EmailMessage:
    # How an RFC 6532 client reads the header section: as UTF-8 text.
    message = email.message_from_string(data.decode("utf-8"), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def utf8_request() -> mail_service_pb2.SendEmailRequest:
    request = make_request()
    request.to[0].address = "用户@例子.测试"
    request.to[0].name = "Zoë Müller"
    request.cc.add(address="josé@example.com")
    request.reply_to.add(address="поддержка@example.com", name="Служба поддержки")
    return request


def test_a_non_ascii_local_part_is_written_as_raw_utf8_with_an_a_label_domain() -> None:
    data = build(utf8_request()).data
    assert "<用户@xn--fsqu00a.xn--0zwm56d>".encode() in data
    assert "josé@example.com".encode() in data
    assert "<поддержка@example.com>".encode() in data
    assert "例子".encode() not in data, "the domain goes out as A-labels"
    message = parse_utf8(data)
    assert [(a.display_name, a.addr_spec) for a in message["To"].addresses] == [
        ("Zoë Müller", "用户@xn--fsqu00a.xn--0zwm56d"),
        ("Zoë Müller", "zoe@example.net"),
    ]
    assert [a.addr_spec for a in message["Cc"].addresses] == ["carol@example.org", "josé@example.com"]
    assert [(a.display_name, a.addr_spec) for a in message["Reply-To"].addresses] == [
        ("Acme Support", "support@example.com"),
        ("Служба поддержки", "поддержка@example.com"),
    ]


def test_display_names_stay_encoded_words_beside_a_utf8_address() -> None:
    data = build(utf8_request()).data
    assert "Zoë".encode() not in data
    assert "Служба".encode() not in data
    header_section = data.split(b"\r\n\r\n", 1)[0]
    to_lines = re.search(rb"^To: .*?(?=\r\n\S)", header_section, re.M | re.S)
    assert to_lines is not None and b"=?utf-8?" in to_lines.group(0)


def test_only_the_utf8_addresses_carry_8_bit_octets() -> None:
    request = utf8_request()
    request.attachments.add(filename="résumé.pdf", content_type="application/pdf", content=PDF)
    data = build(request, subject="Grüße ✓").data
    rest = data
    for address in ("用户@xn--fsqu00a.xn--0zwm56d", "josé@example.com", "поддержка@example.com"):
        rest = rest.replace(address.encode(), b"")
    assert rest.isascii()
    assert data.split(b"\r\n\r\n", 1)[1].isascii(), "the body keeps its transfer encodings"


def test_utf8_address_headers_keep_the_wire_rules() -> None:
    request = utf8_request()
    for i in range(30):
        request.to.add(address=f"{'名' * 20}{i}@example.com", name="Ünïcode " * 10)
    data = build(request).data
    assert re.search(rb"\r(?!\n)", data) is None, "lone CR on the wire"
    assert re.search(rb"(?<!\r)\n", data) is None, "bare LF on the wire"
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    message = parse_utf8(data)
    assert len(message["To"].addresses) == 32
    assert message["To"].addresses[-1].addr_spec == f"{'名' * 20}29@example.com"
    # CPython's parser puts a space between adjacent encoded-words of a phrase (RFC 2047 says to
    # drop the folding white space), so compare without spaces.
    assert message["To"].addresses[-1].display_name.replace(" ", "") == "Ünïcode" * 10
    assert sorted(message.keys()) == sorted(parse(build().data).keys())


def test_bcc_with_a_utf8_local_part_stays_out_of_the_message() -> None:
    request = make_request()
    request.bcc[0].address = "秘密@example.org"
    data = build(request).data
    assert "秘密".encode() not in data
    assert data.isascii(), "no UTF-8 address in a header, so no 8-bit octets at all"


@settings(max_examples=250, deadline=None, database=None)
@given(names=st.lists(_NAME, min_size=1, max_size=4))
def test_any_display_names_beside_utf8_addresses_never_inject_headers(names: list[str]) -> None:
    request = mail_service_pb2.SendEmailRequest()
    getattr(request, "from").address = "billing@example.com"
    addresses = [f"用户{i}@例子.测试" for i in range(len(names))]
    for name, address in zip(names, addresses, strict=True):
        request.to.add(address=address, name=name)

    built = build(request, subject="hi", text="hi", html="<p>hi</p>")
    message = parse_utf8(built.data)

    assert sorted(message.keys()) == _EXPECTED_HEADERS
    assert [a.addr_spec for a in message["To"].addresses] == [
        f"用户{i}@xn--fsqu00a.xn--0zwm56d" for i in range(len(names))
    ]
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", built.data) is None
    assert max(len(line) for line in built.data.split(b"\r\n")) <= 998


@pytest.mark.parametrize("local", ["sender", "用户"])
def test_an_address_whose_domain_has_no_a_label_form_is_never_written(local: str) -> None:
    # Submission refuses such domains; if one slips through, building must fail (the router then
    # counts a stage failure) rather than put a raw Unicode domain on the wire.
    request = make_request()
    request.to[0].address = f"{local}@" + "\u00e9" * 64 + ".example"
    with pytest.raises(UnicodeEncodeError):
        build(request)


def test_headers_that_fit_on_a_line_are_written_as_compat32_writes_them() -> None:
    # The router writes short printable headers directly (services.router.mime._Policy); the
    # bytes must be the ones compat32's Header machinery would have written, whatever the value.
    from email.policy import compat32

    from services.router.mime import _POLICY

    reference = compat32.clone(linesep="\r\n", max_line_length=78)
    rng = random.Random(14)
    alphabet = string.ascii_letters + string.digits + " \t;:=?\"'<>@,.()-_/\\[]\x7f\x0b\x1cé"
    names = ["From", "To", "Subject", "Message-ID", "X-Postwire-Message-Id", "Content-Type", "X-Custom"]
    for _ in range(20_000):
        name = rng.choice(names)
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 90)))
        if "\r" in value or "\n" in value:
            continue
        assert _fold_or_error(_POLICY, name, value) == _fold_or_error(reference, name, value), value


def _fold_or_error(policy: email.policy.Compat32, name: str, value: str) -> bytes | str:
    try:
        return policy.fold_binary(name, value)
    except Exception as exc:
        return type(exc).__name__


def _flattened(part: email.message.Message) -> bytes:
    buffer = io.BytesIO()
    BytesGenerator(buffer, mangle_from_=False, policy=mime._POLICY).flatten(part)
    return buffer.getvalue()


def test_text_parts_are_what_mimetext_builds() -> None:
    """_text_part sets headers and payload directly; the bytes are those of the MIMEText route
    (MIMENonMultipart + set_payload with the QP charset), on random text."""
    rng = random.Random(6532)
    pieces = ["a", "b", " ", "\t", "\n", "\r", "\r\n", ".", "From ", "=", "é", "日本", "\u2028", "x" * 80, "😀", "\x7f"]
    for _ in range(5_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        for subtype in ("plain", "html"):
            reference = MIMENonMultipart("text", subtype, charset="utf-8")
            reference.set_payload(mime._normalize_newlines(text), mime._UTF8_QP)
            ours = mime._text_part(text, subtype)
            assert ours.items() == reference.items()
            assert _flattened(ours) == _flattened(reference), text

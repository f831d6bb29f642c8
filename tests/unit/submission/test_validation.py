"""validate_send: every bad field is reported with its exact path; header injection never passes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st
from postwire.v1 import mail_service_pb2, message_pb2

from libs.errors import InvalidArgument
from services.submission.validation import BATCH_LIMITS, LIMITS, ValidatedSend, validate_batch, validate_send

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def make_request(**fields: object) -> mail_service_pb2.SendEmailRequest:
    """A valid request; keyword arguments override plain scalar fields."""
    request = mail_service_pb2.SendEmailRequest(subject="Your receipt", text_body="Thanks for your order.")
    getattr(request, "from").address = "sender@example.com"
    request.to.add(address="rcpt@example.com")
    for name, value in fields.items():
        setattr(request, name, value)
    return request


def violations(request: mail_service_pb2.SendEmailRequest) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as info:
        validate_send(request, now=NOW)
    return info.value.violations


def fields_of(request: mail_service_pb2.SendEmailRequest) -> list[str]:
    return [field for field, _ in violations(request)]


def test_baseline_request_is_valid() -> None:
    assert isinstance(validate_send(make_request(), now=NOW), ValidatedSend)


# --- header injection through the subject, names and addresses ---------------------------------------------


@pytest.mark.parametrize("subject", ["Hi\r\nBcc: victim@example.net", "Hi\nBcc: x@y.com", "Hi\rBcc: x@y.com"])
def test_subject_with_line_break_is_rejected(subject: str) -> None:
    found = violations(make_request(subject=subject))
    assert [f for f, _ in found] == ["subject"]
    assert "CR or LF" in found[0][1]


def test_from_display_name_with_crlf_is_rejected() -> None:
    request = make_request()
    getattr(request, "from").name = "Support\r\nBcc: victim@example.net"
    assert fields_of(request) == ["from.name"]


def test_recipient_address_with_crlf_is_rejected() -> None:
    request = make_request()
    request.to[0].address = "rcpt@example.com\r\nBcc: victim@example.net"
    found = violations(request)
    assert [f for f, _ in found] == ["to[0].address"]
    assert "CR or LF" in found[0][1]


@pytest.mark.parametrize("name", ["X-A: B", "X A", "Ünï", "", "X" * 77])
def test_malformed_header_name_is_rejected(name: str) -> None:
    request = make_request()
    request.headers[name] = "value"
    assert fields_of(request) == [f'headers["{name}"]']


@pytest.mark.parametrize(
    "name",
    [
        "bCc",
        "From",
        "DKIM-Signature",
        "Return-Path",
        "Received",
        "Message-ID",
        "Content-Type",
        "ARC-Seal",
        "X-Postwire-Foo",
        "x-postwire-message-id",
        "MESSAGE-id",
        "content-transfer-encoding",
    ],
)
def test_reserved_header_name_is_rejected_in_any_case(name: str) -> None:
    request = make_request()
    request.headers[name] = "value"
    found = violations(request)
    assert [f for f, _ in found] == [f'headers["{name}"]']
    assert "reserved" in found[0][1]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("spring\r\nBcc: victim@example.net", "CR or LF"), ("spring\nX: y", "CR or LF"), ("spr\0ing", "NUL")],
)
def test_header_value_with_control_characters_is_rejected(value: str, fragment: str) -> None:
    request = make_request()
    request.headers["X-Campaign"] = value
    found = violations(request)
    assert [f for f, _ in found] == ['headers["X-Campaign"]']
    assert fragment in found[0][1]


def test_custom_header_is_accepted() -> None:
    request = make_request()
    request.headers["X-Campaign"] = "spring sale"
    assert validate_send(request, now=NOW).request.headers["X-Campaign"] == "spring sale"


def test_fifty_one_headers_are_too_many() -> None:
    request = make_request()
    for i in range(51):
        request.headers[f"X-Header-{i}"] = "v"
    assert fields_of(request) == ["headers"]


def test_fifty_headers_are_accepted() -> None:
    request = make_request()
    for i in range(50):
        request.headers[f"X-Header-{i}"] = "v"
    validate_send(request, now=NOW)


# --- attachments --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filename",
    ["invoice.pdf\r\nContent-Type: text/html", "invoice\0.pdf", "invoice.exe", "INVOICE.EXE", "a.ps1"],
)
def test_bad_attachment_filename_is_rejected(filename: str) -> None:
    request = make_request()
    request.attachments.add(filename=filename, content_type="application/pdf", content=b"%PDF")
    assert fields_of(request) == ["attachments[0].filename"]


def test_attachment_without_filename_is_rejected() -> None:
    request = make_request()
    request.attachments.add(content_type="application/pdf", content=b"%PDF")
    assert fields_of(request) == ["attachments[0].filename"]


def test_bad_content_id_is_rejected() -> None:
    request = make_request()
    request.attachments.add(
        filename="logo.png", content_type="image/png", content=b"png", content_id="x>\r\n"
    )
    assert fields_of(request) == ["attachments[0].content_id"]


@pytest.mark.parametrize(
    "content_type", ["text/html; charset=x\r\nX: y", "not a type", "text/html; charset=utf-8"]
)
def test_bad_content_type_is_rejected(content_type: str) -> None:
    request = make_request()
    request.attachments.add(filename="page.html", content_type=content_type, content=b"<p>")
    assert fields_of(request) == ["attachments[0].content_type"]


def test_problems_in_a_later_attachment_name_its_index() -> None:
    request = make_request()
    request.attachments.add(filename="ok.pdf", content_type="application/pdf", content=b"%PDF")
    request.attachments.add(filename="bad.exe", content_type="application/pdf", content=b"MZ")
    assert fields_of(request) == ["attachments[1].filename"]


def test_valid_attachment_and_inline_image_are_accepted() -> None:
    request = make_request(html_body='<img src="cid:logo@postwire">')
    request.attachments.add(filename="report.pdf", content_type="application/pdf", content=b"%PDF")
    request.attachments.add(
        filename="logo.png", content_type="image/png", content=b"png", content_id="logo@postwire"
    )
    validate_send(request, now=NOW)


def test_one_hundred_and_one_attachments_are_too_many() -> None:
    request = make_request()
    for i in range(101):
        request.attachments.add(filename=f"f{i}.txt", content_type="text/plain", content=b"x")
    assert fields_of(request) == ["attachments"]


def test_message_size_limit_counts_base64_growth() -> None:
    # 4 bytes of text body + base64 of the attachment lands exactly on the limit...
    content = b"\0" * (3 * (LIMITS.max_message_bytes // 4 - 1))
    request = make_request(text_body="abcd")
    request.attachments.add(filename="big.bin", content_type="application/octet-stream", content=content)
    validate_send(request, now=NOW)
    # ...and one more byte of body is over it.
    request.text_body = "abcde"
    assert fields_of(request) == ["attachments"]


def test_total_size_over_25_mb_is_rejected() -> None:
    request = make_request()
    request.attachments.add(filename="a.bin", content=b"\0" * (10 * 1024 * 1024))
    request.attachments.add(filename="b.bin", content=b"\0" * (10 * 1024 * 1024))
    assert fields_of(request) == ["attachments"]


# --- tags, metadata, stream -------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["a\r\nb", "receipt\u202e", "t" * 65, "", "with space"])
def test_bad_tag_is_rejected(tag: str) -> None:
    request = make_request()
    request.tags.extend(["ok", tag])
    assert fields_of(request) == ["tags[1]"]


def test_eleven_tags_are_too_many() -> None:
    request = make_request()
    request.tags.extend(f"t{i}" for i in range(11))
    assert fields_of(request) == ["tags"]


@pytest.mark.parametrize("value", ["a\r\nb", "x" * 10 * 1024, "nul\0"])
def test_bad_metadata_value_is_rejected(value: str) -> None:
    request = make_request()
    request.metadata["order"] = value
    assert fields_of(request) == ['metadata["order"]']


def test_bad_metadata_key_is_rejected() -> None:
    request = make_request()
    request.metadata["order id"] = "1"
    assert fields_of(request) == ['metadata["order id"]']


@pytest.mark.parametrize("stream", ["transactional\u202e", "../x", "Transactional", "s" * 65])
def test_bad_stream_is_rejected(stream: str) -> None:
    assert fields_of(make_request(stream=stream)) == ["stream"]


def test_explicit_stream_is_kept() -> None:
    validated = validate_send(make_request(stream="password-reset_2"), now=NOW)
    assert validated.stream == "password-reset_2"
    assert validated.request.stream == "password-reset_2"


# --- addresses ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "user@",
        "@example.com",
        "user",
        "user@@x.com",
        "a..b@x.com",
        '"a b"@x.com',
        "me@[127.0.0.1]",
        "a\u200bb@x.com",
        "a\u202eb@x.com",
        "l" * 65 + "@example.com",
    ],
)
def test_bad_recipient_address_is_rejected(address: str) -> None:
    request = make_request()
    request.to[0].address = address
    assert fields_of(request) == ["to[0].address"]


def test_sixty_four_octet_local_part_is_accepted() -> None:
    request = make_request()
    request.to[0].address = "l" * 64 + "@example.com"
    validate_send(request, now=NOW)


def test_idn_domain_is_accepted() -> None:
    request = make_request()
    request.to[0].address = "user@bücher.example"
    validated = validate_send(request, now=NOW)
    assert validated.recipients == (("user@bücher.example", message_pb2.RECIPIENT_KIND_TO),)


def test_bad_cc_bcc_and_reply_to_addresses_name_their_list() -> None:
    request = make_request()
    request.cc.add(address="ok@example.com")
    request.cc.add(address="user@")
    request.bcc.add(address="@example.com")
    request.reply_to.add(address="nope")
    assert fields_of(request) == ["cc[1].address", "bcc[0].address", "reply_to[0].address"]


def test_missing_sender_is_rejected() -> None:
    request = make_request()
    request.ClearField("from")
    assert fields_of(request) == ["from.address"]


def test_duplicate_recipient_is_rejected_case_insensitively() -> None:
    request = make_request()
    request.bcc.add(address="RCPT@example.com")
    assert fields_of(request) == ["bcc[0].address"]


def test_fifty_one_recipients_are_too_many() -> None:
    request = make_request()
    request.ClearField("to")
    for i in range(20):
        request.to.add(address=f"to{i}@example.com")
    for i in range(20):
        request.cc.add(address=f"cc{i}@example.com")
    for i in range(11):
        request.bcc.add(address=f"bcc{i}@example.com")
    assert fields_of(request) == ["to"]


def test_fifty_recipients_are_accepted() -> None:
    request = make_request()
    request.ClearField("to")
    for i in range(50):
        request.to.add(address=f"to{i}@example.com")
    assert len(validate_send(request, now=NOW).recipients) == 50


def test_no_recipient_is_rejected() -> None:
    request = make_request()
    request.ClearField("to")
    assert fields_of(request) == ["to"]


def test_only_bcc_recipients_are_enough() -> None:
    request = make_request()
    request.ClearField("to")
    request.bcc.add(address="hidden@example.com")
    validated = validate_send(request, now=NOW)
    assert validated.recipients == (("hidden@example.com", message_pb2.RECIPIENT_KIND_BCC),)


# --- body, template, sizes ------------------------------------------------------------------------------------


def test_no_body_and_no_template_is_rejected() -> None:
    assert fields_of(make_request(text_body="")) == ["text_body"]


def test_html_body_alone_is_enough() -> None:
    validate_send(make_request(text_body="", html_body="<p>Thanks</p>"), now=NOW)


def test_bodies_and_template_together_are_rejected() -> None:
    request = make_request(html_body="<p>x</p>")
    request.template.id = "tpl_1"
    assert fields_of(request) == ["template"]


def test_template_without_subject_or_body_is_accepted() -> None:
    request = make_request(subject="", text_body="")
    request.template.name = "receipt"
    request.template.variables.update({"name": "Ada", "items": [1, 2, {"sku": "A"}]})
    validate_send(request, now=NOW)


def test_template_without_id_or_name_is_rejected() -> None:
    request = make_request(text_body="")
    request.template.version = 3
    assert fields_of(request) == ["template.id"]


def test_negative_template_version_is_rejected() -> None:
    request = make_request(text_body="")
    request.template.id = "tpl_1"
    request.template.version = -1
    assert fields_of(request) == ["template.version"]


def _nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": "x"}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


def test_template_variables_nested_forty_deep_are_rejected() -> None:
    request = make_request(text_body="")
    request.template.id = "tpl_1"
    request.template.variables.update(_nested(40))
    assert fields_of(request) == ["template.variables"]


def test_template_variables_nested_in_lists_count_towards_depth() -> None:
    value: object = "x"
    for _ in range(40):
        value = [value]
    request = make_request(text_body="")
    request.template.id = "tpl_1"
    request.template.variables.update({"l": value})
    assert fields_of(request) == ["template.variables"]


def test_template_variables_over_256_kb_are_rejected() -> None:
    request = make_request(text_body="")
    request.template.id = "tpl_1"
    request.template.variables.update({"blob": "x" * (LIMITS.max_variables_bytes + 1)})
    assert fields_of(request) == ["template.variables"]


def test_shallow_template_variables_are_accepted() -> None:
    request = make_request(text_body="")
    request.template.id = "tpl_1"
    request.template.variables.update(_nested(5))
    validate_send(request, now=NOW)


def test_subject_of_100_kb_is_rejected() -> None:
    found = violations(make_request(subject="s" * 100 * 1024))
    assert [f for f, _ in found] == ["subject"]
    assert "998" in found[0][1]


def test_subject_of_998_characters_is_accepted() -> None:
    validate_send(make_request(subject="s" * 998), now=NOW)


def test_missing_subject_without_template_is_rejected() -> None:
    assert fields_of(make_request(subject="")) == ["subject"]


# --- idempotency key and schedule -------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["k" * 257, "abc\x01def", "tab\there", "del\x7f", "ünï"])
def test_bad_idempotency_key_is_rejected(key: str) -> None:
    assert fields_of(make_request(idempotency_key=key)) == ["idempotency_key"]


def test_idempotency_key_of_256_printable_characters_is_accepted() -> None:
    validate_send(make_request(idempotency_key="order-42 " + "k" * 247), now=NOW)


def _scheduled(delta: timedelta) -> mail_service_pb2.SendEmailRequest:
    request = make_request()
    request.send_time.FromDatetime(NOW + delta)
    return request


@pytest.mark.parametrize("delta", [timedelta(minutes=-10), timedelta(days=31)])
def test_send_time_out_of_range_is_rejected(delta: timedelta) -> None:
    assert fields_of(_scheduled(delta)) == ["send_time"]


@pytest.mark.parametrize("delta", [timedelta(minutes=-4), timedelta(0), timedelta(days=29)])
def test_send_time_in_range_is_accepted(delta: timedelta) -> None:
    validate_send(_scheduled(delta), now=NOW)


# --- all at once, and the happy path ----------------------------------------------------------------------


def test_every_bad_field_is_reported_at_once() -> None:
    request = make_request(subject="Hi\r\nBcc: x@y.com", stream="../x", idempotency_key="k" * 257)
    request.to[0].address = "user@@x.com"
    request.headers["From"] = "evil@example.com"
    request.tags.append("bad tag")
    request.send_time.FromDatetime(NOW + timedelta(days=31))
    assert set(fields_of(request)) == {
        "subject",
        "stream",
        "idempotency_key",
        "to[0].address",
        'headers["From"]',
        "tags[0]",
        "send_time",
    }


def test_invalid_argument_message_names_the_first_violation() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_send(make_request(subject="a\nb"), now=NOW)
    assert info.value.message.startswith("subject: ")


def test_valid_request_is_normalised() -> None:
    request = mail_service_pb2.SendEmailRequest(
        subject="Receipt", text_body="Thanks", html_body="<p>Thanks</p>"
    )
    sender = getattr(request, "from")
    sender.address = "Billing@EXAMPLE.COM"
    sender.name = "Billing — Acme"
    request.to.add(address="ada@Example.Org", name="Ada Lovelace")
    request.cc.add(address="bob@BÜCHER.example")
    request.bcc.add(address="audit@example.net")
    request.reply_to.add(address="help@Example.com")

    validated = validate_send(request, now=NOW)

    assert validated.stream == "transactional"
    assert validated.request.stream == "transactional"
    assert getattr(validated.request, "from").address == "Billing@example.com"
    assert getattr(validated.request, "from").name == "Billing — Acme"
    assert validated.request.to[0].address == "ada@example.org"
    assert validated.request.cc[0].address == "bob@bücher.example"
    assert validated.request.reply_to[0].address == "help@example.com"
    assert validated.recipients == (
        ("ada@example.org", message_pb2.RECIPIENT_KIND_TO),
        ("bob@bücher.example", message_pb2.RECIPIENT_KIND_CC),
        ("audit@example.net", message_pb2.RECIPIENT_KIND_BCC),
    )
    # The caller's request object is not modified.
    assert getattr(request, "from").address == "Billing@EXAMPLE.COM"
    assert request.stream == ""


# --- properties -------------------------------------------------------------------------------------------

_ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
_PRINTABLE = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))


@settings(max_examples=200, deadline=None, database=None)
@given(before=_ANY_TEXT, brk=st.sampled_from(["\r", "\n", "\r\n", "\n\r"]), after=_ANY_TEXT)
def test_any_subject_with_cr_or_lf_is_rejected(before: str, brk: str, after: str) -> None:
    assert fields_of(make_request(subject=before + brk + after)) == ["subject"]


@settings(max_examples=200, deadline=None, database=None)
@given(subject=st.text(_PRINTABLE, min_size=1, max_size=LIMITS.max_subject))
def test_any_printable_subject_up_to_998_characters_is_accepted(subject: str) -> None:
    assert validate_send(make_request(subject=subject), now=NOW).request.subject == subject


# --- a trailing LF must not slip past `$` ------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.headers.__setitem__("X-Campaign\n", "spring"), 'headers["X-Campaign\n"]'),
        (lambda r: r.tags.append("receipt\n"), "tags[0]"),
        (lambda r: r.metadata.__setitem__("order\n", "42"), 'metadata["order\n"]'),
        (lambda r: setattr(r, "stream", "transactional\n"), "stream"),
        (lambda r: setattr(r, "idempotency_key", "order-42\n"), "idempotency_key"),
        (
            lambda r: r.attachments.add(filename="a.png", content_type="image/png\n", content=b"png"),
            "attachments[0].content_type",
        ),
        (
            lambda r: r.attachments.add(
                filename="l.png", content_type="image/png", content=b"p", content_id="logo\n"
            ),
            "attachments[0].content_id",
        ),
    ],
)
def test_trailing_newline_is_rejected(mutate, field) -> None:
    request = make_request()
    mutate(request)
    assert fields_of(request) == [field]


# --- internationalised addresses (SMTPUTF8, RFC 6532) -------------------------------------------------------


def test_non_ascii_local_parts_are_accepted_in_to_cc_bcc_and_reply_to() -> None:
    request = make_request()
    request.to[0].address = "用户@例子.测试"
    request.cc.add(address="josé@example.com")
    request.bcc.add(address="Ünal@example.org")
    request.reply_to.add(address="поддержка@example.com", name="Служба поддержки")
    validated = validate_send(request, now=NOW)
    assert validated.recipients == (
        ("用户@例子.测试", message_pb2.RECIPIENT_KIND_TO),
        ("josé@example.com", message_pb2.RECIPIENT_KIND_CC),
        ("Ünal@example.org", message_pb2.RECIPIENT_KIND_BCC),
    )
    assert validated.request.reply_to[0].address == "поддержка@example.com"


def test_a_non_ascii_local_part_is_stored_in_nfc_so_duplicates_are_found() -> None:
    request = make_request()
    request.to[0].address = "jose\u0301@example.com"  # e + combining acute
    request.cc.add(address="JOSÉ@example.com")
    found = violations(request)
    assert found == [("cc[0].address", "duplicate recipient")]
    request.ClearField("cc")
    assert validate_send(request, now=NOW).recipients[0][0] == "josé@example.com"


def test_the_sender_keeps_an_ascii_local_part() -> None:
    # The From address is the DKIM/DMARC identity and names the verified domain; receivers and
    # verifiers without RFC 6532 support would reject or mangle it, so only recipients get UTF-8.
    request = make_request()
    getattr(request, "from").address = "josé@example.com"
    found = violations(request)
    assert [f for f, _ in found] == ["from.address"]
    assert "ASCII" in found[0][1]


@pytest.mark.parametrize(
    "address",
    [
        "用户\r\nBcc: victim@example.net@例子.测试",
        "用\u200b户@example.com",
        "用\u202e户@example.com",
        "用户\x00@example.com",
        '"用 户"@example.com',
        "用户@[127.0.0.1]",
        "用户..名@example.com",
        "用 户@example.com",
        "用户@",
        "用户@例子.invalid",
        "用" * 22 + "@example.com",  # 66 octets of UTF-8: over the 64-octet local part limit
    ],
)
def test_non_ascii_local_parts_still_get_every_other_check(address: str) -> None:
    request = make_request()
    request.to[0].address = address
    assert fields_of(request) == ["to[0].address"]


def test_twenty_one_three_octet_characters_fit_the_local_part() -> None:
    request = make_request()
    request.to[0].address = "用" * 21 + "@example.com"
    validate_send(request, now=NOW)


_ASCII_LOCAL = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=70)


@settings(max_examples=300)
@given(local=_ASCII_LOCAL, domain=st.sampled_from(["example.com", "bücher.example", "x", "[127.0.0.1]"]))
def test_ascii_addresses_are_judged_exactly_as_before(local: str, domain: str) -> None:
    # Accepting UTF-8 local parts must not loosen anything for ASCII ones.
    address = f"{local}@{domain}"
    try:
        validate_email(
            address,
            check_deliverability=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            allow_smtputf8=False,
        )
        before = not any(ord(c) < 32 or ord(c) == 127 for c in address) and len(local) <= 64
    except EmailNotValidError:
        before = False
    request = make_request()
    request.to[0].address = address
    try:
        validate_send(request, now=NOW)
        after = True
    except InvalidArgument:
        after = False
    assert after == before


_DOMAINS = [
    "example.com",
    "Example.COM",
    "bücher.example",
    "xn--bcher-kva.example",
    "localhost",
    "x.test",
    "a.invalid",
    "home.arpa",
    "a.123",
    "ab--cd.com",
    "-ex.com",
    "a..com",
    "a.com.",
    "x",
    "[127.0.0.1]",
    "ex.com <a@b.com>",
    "a@b.com",
    "d" * 63 + "." + "e" * 63 + "." + "f" * 63 + ".com",
    "d" * 64 + ".com",
]


@settings(max_examples=400)
@given(
    local=st.one_of(
        _ASCII_LOCAL, st.sampled_from(["Postmaster", "INFO", "John.Doe", "a" * 64, "a" * 65, "o'neil+x"])
    ),
    domain=st.sampled_from(_DOMAINS),
)
def test_recipients_are_normalised_and_refused_exactly_as_validate_email_says(
    local: str, domain: str
) -> None:
    # Plain addresses skip validate_email's per-character domain checks (cached per domain):
    # the stored form and every refusal's text must be what validate_email itself gives.
    address = f"{local}@{domain}"
    request = make_request()
    request.to[0].address = address
    try:
        expected = validate_email(
            address,
            check_deliverability=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            allow_smtputf8=True,
        )
    except EmailNotValidError as exc:
        refused = violations(request)
        assert [f for f, _ in refused] == ["to[0].address"]
        if not any(ord(c) < 32 or ord(c) == 127 for c in address):
            assert refused[0][1] == str(exc)
        return
    if any(ord(c) < 32 or ord(c) == 127 for c in address) or len(expected.local_part.encode()) > 64:
        assert fields_of(request) == ["to[0].address"]
        return
    assert validate_send(request, now=NOW).recipients[0][0] == expected.normalized


def _batch_message(to: str = "a@example.org", **fields: object) -> mail_service_pb2.SendEmailRequest:
    out = mail_service_pb2.SendEmailRequest(subject="Hi", text_body="x", **fields)  # type: ignore[arg-type]
    getattr(out, "from").address = "shop@example.com"
    out.to.add(address=to)
    return out


def test_a_batch_names_every_bad_message_by_its_position() -> None:
    messages = [_batch_message(f"u{i}@example.org") for i in range(3)]
    messages[1].to[0].address = "nope"
    messages[2].subject = ""
    with pytest.raises(InvalidArgument) as refused:
        validate_batch(mail_service_pb2.SendBatchRequest(messages=messages))
    assert [f for f, _ in refused.value.violations] == ["messages[1].to[0].address", "messages[2].subject"]


def test_a_batch_is_limited_in_messages_and_recipients_and_keys_are_unique_within_it() -> None:
    too_many = [_batch_message(f"u{i}@example.org") for i in range(BATCH_LIMITS.max_messages + 1)]
    with pytest.raises(InvalidArgument) as refused:
        validate_batch(mail_service_pb2.SendBatchRequest(messages=too_many))
    assert [f for f, _ in refused.value.violations] == ["messages"]

    wide = []
    for i in range(21):
        m = _batch_message(f"first{i}@example.org")
        for j in range(47):
            m.to.add(address=f"r{i}-{j}@example.org")
        wide.append(m)
    with pytest.raises(InvalidArgument) as refused:
        validate_batch(mail_service_pb2.SendBatchRequest(messages=wide))
    assert refused.value.violations == [("messages", "at most 1000 recipients across the batch (got 1008)")]

    keyed = [_batch_message(idempotency_key="k"), _batch_message(), _batch_message(idempotency_key="k")]
    with pytest.raises(InvalidArgument) as refused:
        validate_batch(mail_service_pb2.SendBatchRequest(messages=keyed))
    assert [f for f, _ in refused.value.violations] == ["messages[2].idempotency_key"]

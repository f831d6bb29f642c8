"""DKIM signing, checked by an independent verifier (dkimpy) against the TXT records policy
publishes, and against the published RFC 8463 Appendix A example; pure."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Mapping

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.mail.dkim import (
    OVERSIGNED_HEADERS,
    SIGNED_HEADERS,
    MessageSigner,
    SigningKey,
    body_hash,
    header_hash_input,
    sign,
    sign_hash_input,
)
from services.policy.domains import Purpose, generate_keys, records_for

DOMAIN = "mail.example.org"

MESSAGE = (
    b"From: Receipts <receipts@mail.example.org>\r\n"
    b"To: Ana <ana@example.net>\r\n"
    b"Subject: Your receipt\r\n"
    b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <r1@mail.example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"List-Unsubscribe: <https://u.example.org/t/abc>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"Feedback-ID: r1:tenant:receipts:postwire\r\n"
    b"X-Postwire-Message-Id: m-1\r\n"
    b"\r\n"
    b"Thanks for your order.\r\n"
    b"Total: 12 EUR\r\n"
)


def _keys_and_dns() -> tuple[SigningKey, SigningKey, Callable[..., bytes | None]]:
    """A domain's keys as policy makes them, and a resolver answering the records it publishes."""
    made = generate_keys()
    rsa_key = serialization.load_pem_private_key(made.rsa_private_pem, password=None)
    ed_key = serialization.load_pem_private_key(made.ed25519_private_pem, password=None)
    assert isinstance(rsa_key, rsa.RSAPrivateKey) and isinstance(ed_key, ed25519.Ed25519PrivateKey)
    records = records_for(
        DOMAIN,
        rsa_selector=made.rsa_selector,
        rsa_public=made.rsa_public,
        ed25519_selector=made.ed25519_selector,
        ed25519_public=made.ed25519_public,
        spf_include="_spf.postwire.test",
        return_path_host="bounces.postwire.test",
        return_path_label="pw-bounces",
    )
    txt = {
        f"{r.name}.".encode(): r.value.encode()
        for r in records
        if r.purpose in (Purpose.DKIM_RSA, Purpose.DKIM_ED25519)
    }
    return (
        SigningKey(DOMAIN, made.rsa_selector, rsa_key),
        SigningKey(DOMAIN, made.ed25519_selector, ed_key),
        _resolver(txt),
    )


def _resolver(txt: Mapping[bytes, bytes]) -> Callable[..., bytes | None]:
    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return txt.get(name if name.endswith(b".") else name + b".")

    return dnsfunc


RSA_KEY, ED_KEY, DNS = _keys_and_dns()


def _verifies(message: bytes, index: int = 0, dnsfunc: Callable[..., bytes | None] = DNS) -> bool:
    """Whether the index-th signature verifies (dkim.verify checks only the first); a failure
    dkimpy reports by raising (a body hash mismatch) counts as not verifying."""
    try:
        return bool(dkim.DKIM(message).verify(idx=index, dnsfunc=dnsfunc))
    except dkim.DKIMException:
        return False


def _signature_fields(message: bytes) -> list[str]:
    head = message.split(b"\r\n\r\n", 1)[0].decode()
    fields = re.split(r"\r\n(?![ \t])", head)
    return [f for f in fields if f.lower().startswith("dkim-signature:")]


def _tags(field: str) -> dict[str, str]:
    value = re.sub(r"\s+", "", field.split(":", 1)[1])
    return dict(part.split("=", 1) for part in value.split(";") if part)


@pytest.mark.parametrize("key", [RSA_KEY, ED_KEY], ids=["rsa", "ed25519"])
def test_each_algorithm_verifies_independently(key: SigningKey) -> None:
    signed = sign(MESSAGE, [key])
    assert dkim.verify(signed, dnsfunc=DNS)
    (field,) = _signature_fields(signed)
    tags = _tags(field)
    assert tags["a"] == key.algorithm and tags["d"] == DOMAIN and tags["s"] == key.selector
    assert tags["c"] == "relaxed/relaxed" and "l" not in tags
    assert signed.endswith(MESSAGE)


def test_both_signatures_rsa_first_one_body_hash_both_verify() -> None:
    signed = sign(MESSAGE, [ED_KEY, RSA_KEY], timestamp=1_790_000_000)
    rsa_field, ed_field = _signature_fields(signed)
    assert _tags(rsa_field)["a"] == "rsa-sha256" and _tags(ed_field)["a"] == "ed25519-sha256"
    assert _tags(rsa_field)["bh"] == _tags(ed_field)["bh"]
    assert _tags(rsa_field)["t"] == _tags(ed_field)["t"] == "1790000000"
    assert _verifies(signed, 0) and _verifies(signed, 1)
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")


def test_signature_lines_stay_within_78_characters() -> None:
    signed = sign(MESSAGE, [RSA_KEY, ED_KEY])
    for field in _signature_fields(signed):
        assert max(len(line) for line in field.split("\r\n")) <= 78, field


def test_bare_line_feeds_are_signed_as_the_crlf_that_goes_on_the_wire() -> None:
    signed = sign(MESSAGE.replace(b"\r\n", b"\n"), [RSA_KEY, ED_KEY])
    assert signed.endswith(MESSAGE)
    assert _verifies(signed, 0) and _verifies(signed, 1)


def test_utf8_headers_and_body_verify() -> None:
    # SMTPUTF8 messages carry raw UTF-8 in headers (RFC 6532); they are signed as bytes.
    message = MESSAGE.replace(b"To: Ana <ana@example.net>", "To: José <josé@exämple.net>".encode()).replace(
        b"Thanks for your order.", "Merci pour votre commande — à bientôt.".encode()
    )
    signed = sign(message, [RSA_KEY, ED_KEY])
    assert _verifies(signed, 0) and _verifies(signed, 1)


def test_a_last_line_without_crlf_is_signed_as_sent_with_one() -> None:
    # SMTP clients add the CRLF before the final "."; the trailing space then is end-of-line space.
    signed = sign(MESSAGE + b"Regards ", [RSA_KEY, ED_KEY])
    assert signed.endswith(MESSAGE + b"Regards \r\n")
    assert _verifies(signed, 0) and _verifies(signed, 1)


def test_no_keys_leaves_the_message_alone() -> None:
    assert sign(MESSAGE, []) == MESSAGE
    assert MessageSigner(MESSAGE, []).sign(b"X-Top: 1\r\n") == b"X-Top: 1\r\n" + MESSAGE


def test_copies_signed_from_one_prepared_message_match_signing_each_whole() -> None:
    # mta_worker prepares a message once and signs each recipient's copy with its own token on
    # top; every copy must be exactly what signing the whole copy gives, and verify.
    signer = MessageSigner(MESSAGE.replace(b"\r\n", b"\n"), [ED_KEY, RSA_KEY])
    for n in range(3):
        # Feedback-ID twice (on top and in the message): h= must take the lower one first.
        top = f"X-Postwire-Feedback-Id: tok{n}\r\nFeedback-ID: s:t{n}:postwire\r\nSubject: top\n".encode()
        copy = signer.sign(top, timestamp=1_790_000_000)
        assert copy == sign(top + MESSAGE, [RSA_KEY, ED_KEY], timestamp=1_790_000_000)
        assert _verifies(copy, 0) and _verifies(copy, 1)


# RFC 8463 Appendix A: keys (A.1, A.2) and the signed example message (A.3), as published.
RFC_ED25519_SEED = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
RFC_ED25519_PUBLIC = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
RFC_RSA_PRIVATE = b"""-----BEGIN RSA PRIVATE KEY-----
MIICXQIBAAKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQi
Y/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqM
KrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB
AoGAH0cxOhFZDgzXWhDhnAJDw5s4roOXN4OhjiXa8W7Y3rhX3FJqmJSPuC8N9vQm
6SVbaLAE4SG5mLMueHlh4KXffEpuLEiNp9Ss3O4YfLiQpbRqE7Tm5SxKjvvQoZZe
zHorimOaChRL2it47iuWxzxSiRMv4c+j70GiWdxXnxe4UoECQQDzJB/0U58W7RZy
6enGVj2kWF732CoWFZWzi1FicudrBFoy63QwcowpoCazKtvZGMNlPWnC7x/6o8Gc
uSe0ga2xAkEA8C7PipPm1/1fTRQvj1o/dDmZp243044ZNyxjg+/OPN0oWCbXIGxy
WvmZbXriOWoSALJTjExEgraHEgnXssuk7QJBALl5ICsYMu6hMxO73gnfNayNgPxd
WFV6Z7ULnKyV7HSVYF0hgYOHjeYe9gaMtiJYoo0zGN+L3AAtNP9huqkWlzECQE1a
licIeVlo1e+qJ6Mgqr0Q7Aa7falZ448ccbSFYEPD6oFxiOl9Y9se9iYHZKKfIcst
o7DUw1/hz2Ck4N5JrgUCQQCyKveNvjzkkd8HjYs0SwM0fPjK16//5qDZ2UiDGnOe
uEzxBDAr518Z8VFbR41in3W4Y3yCDgQlLlcETrS+zYcL
-----END RSA PRIVATE KEY-----
"""
RFC_RSA_RECORD = (
    "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWR"
    "iGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutAC"
    "DfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3"
    "Ip3G+2kryOTIKT+l/K4w3QIDAQAB"
)
RFC_HEADERS = (
    b"From: Joe SixPack <joe@football.example.com>\r\n"
    b"To: Suzie Q <suzie@shopping.example.net>\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@football.example.com>"
)
RFC_BODY = b"Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n"
RFC_H = ("from", "to", "subject", "date", "message-id", "from", "subject", "date")
RFC_BH = "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="
RFC_ED25519_UNSIGNED = (
    b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    b" d=football.example.com; i=@football.example.com;\r\n"
    b" q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    b" subject : date : message-id : from : subject : date;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b" b="
)
RFC_ED25519_B = "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw=="
RFC_RSA_UNSIGNED = (
    b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
    b" d=football.example.com; i=@football.example.com;\r\n"
    b" q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n"
    b" date : message-id : from : subject : date;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b" b="
)
RFC_RSA_B = (
    "F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9m"
    "PYQTnGdaSGsgeefOsk2JzdA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8="
)


def _rfc_keys() -> tuple[rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey]:
    rsa_key = serialization.load_pem_private_key(RFC_RSA_PRIVATE, password=None)
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    ed_key = ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(RFC_ED25519_SEED))
    public = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert base64.b64encode(public).decode() == RFC_ED25519_PUBLIC
    return rsa_key, ed_key


def test_rfc8463_appendix_a_signatures_are_reproduced_byte_for_byte() -> None:
    # Ed25519 and RSASSA-PKCS1-v1_5 are deterministic, so the published b= values pin the
    # canonicalisation and, for Ed25519, that the SHA-256 digest is signed rather than the input.
    rsa_key, ed_key = _rfc_keys()
    assert body_hash(RFC_BODY) == RFC_BH
    ed_input = header_hash_input(RFC_HEADERS, RFC_H, RFC_ED25519_UNSIGNED)
    assert base64.b64encode(sign_hash_input(ed_key, ed_input)).decode() == RFC_ED25519_B
    rsa_input = header_hash_input(RFC_HEADERS, RFC_H, RFC_RSA_UNSIGNED)
    assert base64.b64encode(sign_hash_input(rsa_key, rsa_input)).decode() == RFC_RSA_B


def test_rfc8463_example_message_signed_here_verifies_against_the_rfc_records() -> None:
    rsa_key, ed_key = _rfc_keys()
    dns = _resolver(
        {
            b"brisbane._domainkey.football.example.com.": f"v=DKIM1; k=ed25519; p={RFC_ED25519_PUBLIC}".encode(),
            b"test._domainkey.football.example.com.": RFC_RSA_RECORD.encode(),
        }
    )
    keys = [
        SigningKey("football.example.com", "test", rsa_key),
        SigningKey("football.example.com", "brisbane", ed_key),
    ]
    signed = sign(RFC_HEADERS + b"\r\n\r\n" + RFC_BODY, keys, timestamp=1528637909)
    assert _verifies(signed, 0, dns) and _verifies(signed, 1, dns)
    assert all(_tags(f)["bh"] == RFC_BH for f in _signature_fields(signed))


@pytest.mark.parametrize(
    "added",
    [
        b"From: Mallory <ceo@mail.example.org>\r\n",
        b"Subject: Urgent: wire transfer\r\n",
        b"To: someone-else@example.net\r\n",
        b"List-Unsubscribe: <https://evil.example/u>\r\n",
    ],
    ids=["from", "subject", "to", "list-unsubscribe"],
)
@pytest.mark.parametrize("key", [RSA_KEY, ED_KEY], ids=["rsa", "ed25519"])
def test_a_header_added_after_signing_breaks_the_signature(key: SigningKey, added: bytes) -> None:
    signed = sign(MESSAGE, [key])
    assert _verifies(signed)
    # On top, where a verifier (taking instances bottom-up) would use the original copy and
    # pass, were the name not listed once more than it occurs.
    assert not _verifies(added + signed)
    head, body = signed.split(b"\r\n\r\n", 1)
    assert not _verifies(head + b"\r\n" + added + b"\r\n" + body)


def test_an_unsubscribe_header_added_to_a_message_without_one_breaks_the_signature() -> None:
    bare = re.sub(rb"List-Unsubscribe[^\r]*\r\n", b"", MESSAGE)
    signed = sign(bare, [RSA_KEY])
    assert _verifies(signed)
    assert not _verifies(b"List-Unsubscribe: <https://evil.example/u>\r\n" + signed)


@pytest.mark.parametrize("key", [RSA_KEY, ED_KEY], ids=["rsa", "ed25519"])
def test_a_body_change_breaks_the_signature(key: SigningKey) -> None:
    signed = sign(MESSAGE, [key])
    assert not _verifies(signed.replace(b"Total: 12 EUR", b"Total: 1200 EUR"))
    assert not _verifies(signed + b"Pay here: https://evil.example/\r\n")


def test_folded_and_whitespace_laden_headers_and_body_verify() -> None:
    message = (
        b"From:   Receipts\t <receipts@mail.example.org>  \r\n"
        b"To: Ana <ana@example.net>,\r\n\tBo <bo@example.net>,\r\n    Cy <cy@example.net>\r\n"
        b"SUBJECT:  A  very\r\n  long \t subject   \r\n"
        b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
        b"Message-ID: <r2@mail.example.org>\r\n"
        b"Content-Type: text/plain;\r\n charset=utf-8\r\n"
        b"\r\n"
        b"  indented \t line \t \r\n"
        b"\r\n"
        b"trailing blank lines follow   \r\n"
        b"\r\n"
        b"\r\n"
    )
    signed = sign(message, [RSA_KEY, ED_KEY])
    assert _verifies(signed, 0) and _verifies(signed, 1)
    # Relaxed canonicalisation survives what relays do: re-folding and whitespace changes.
    head, body = signed.split(b"\r\n\r\n", 1)
    refolded = head.replace(b"SUBJECT:  A  very\r\n  long", b"Subject: A very long")
    rewhitespaced = body.replace(b"indented \t line", b"indented line").rstrip(b"\r\n") + b"\r\n"
    assert refolded != head and rewhitespaced != body
    altered = refolded + b"\r\n\r\n" + rewhitespaced
    assert _verifies(altered, 0) and _verifies(altered, 1)


@pytest.mark.parametrize("body", [b"", b"\r\n", b"\r\n\r\n"], ids=["none", "one-crlf", "two-crlf"])
def test_an_empty_body_verifies(body: bytes) -> None:
    head = MESSAGE.split(b"\r\n\r\n", 1)[0]
    signed = sign(head + b"\r\n\r\n" + body, [RSA_KEY, ED_KEY])
    assert _verifies(signed, 0) and _verifies(signed, 1)
    # Relaxed: an empty body (or only empty lines) hashes as nothing at all, not as CRLF.
    assert (
        _tags(_signature_fields(signed)[0])["bh"] == base64.b64encode(hashlib.sha256(b"").digest()).decode()
    )


def test_h_lists_only_signed_headers_present_plus_the_oversigned_extra_instances() -> None:
    message = (
        b"Received: from relay.example by us\r\n"
        b"From: receipts@mail.example.org\r\n"
        b"To: ana@example.net\r\n"
        b"Subject: hi\r\n"
        b"X-Campaign: spring\r\n"
        b"Return-Path: <x@example.org>\r\n"
        b"Content-Type: text/plain\r\n"
        b"References: <a@x>\r\n"
        b"References: <b@x>\r\n"
        b"\r\n"
        b"body\r\n"
    )
    signed = sign(message, [RSA_KEY])
    h = _tags(_signature_fields(signed)[0])["h"].split(":")
    assert set(h) <= set(SIGNED_HEADERS)
    counts = {name: h.count(name) for name in set(h)}
    assert counts == {
        "from": 2,
        "to": 2,
        "subject": 2,
        "content-type": 1,
        "references": 2,
        # Oversigned even when absent, so one cannot be added later.
        "date": 1,
        "message-id": 1,
        "list-unsubscribe": 1,
        "list-unsubscribe-post": 1,
    }
    assert {"from", "to", "subject", "date", "message-id"} <= OVERSIGNED_HEADERS
    assert _verifies(signed)


def test_message_headers_with_feedback_id_and_unsubscribe_are_signed() -> None:
    signed = sign(MESSAGE, [ED_KEY])
    h = _tags(_signature_fields(signed)[0])["h"].split(":")
    assert "feedback-id" in h and h.count("list-unsubscribe") == 2 and h.count("list-unsubscribe-post") == 2
    assert "x-postwire-message-id" not in h
    # Feedback-ID is signed (not oversigned): changing it breaks the signature.
    assert not _verifies(signed.replace(b"r1:tenant:receipts", b"r1:other:receipts"))


def test_signing_key_repr_shows_no_key_material() -> None:
    pem = RSA_KEY.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for text in (repr(RSA_KEY), str(RSA_KEY), repr(ED_KEY), f"{(RSA_KEY, ED_KEY)}"):
        assert "private_key" not in text and "PRIVATE" not in text and "object at" not in text
        assert pem.decode().splitlines()[1][:20] not in text
    assert RSA_KEY.selector in repr(RSA_KEY)


_WSP = st.sampled_from([" ", "\t", "  ", " \t "])
_WORD = st.text(alphabet="abcXYZ019<>@.,;=\"'()-_", min_size=1, max_size=8)
_VALUE = st.lists(st.tuples(_WORD, _WSP, st.booleans()), min_size=1, max_size=6).map(
    # Words separated by whitespace runs, some of them folded onto a continuation line.
    lambda parts: "".join(word + ("\r\n" + wsp if fold else wsp) for word, wsp, fold in parts)
)
_LINE = st.lists(st.tuples(_WORD, _WSP), max_size=5).map(lambda parts: "".join(w + s for w, s in parts))


@settings(max_examples=60, deadline=None)
@given(
    subject=_VALUE,
    to=_VALUE,
    extra=st.lists(st.sampled_from(["Cc", "Reply-To", "X-Tag", "References", "Subject"]), max_size=3),
    body=st.lists(_LINE, max_size=6),
    trailing=st.sampled_from(["", "\r\n", "\r\n\r\n", "  \r\n\t\r\n"]),
)
def test_any_whitespace_and_folding_verifies_with_both_algorithms(
    subject: str, to: str, extra: list[str], body: list[str], trailing: str
) -> None:
    head = f"From: a@{DOMAIN}\r\nTo:{to}\r\nSubject: {subject}\r\n" + "".join(
        f"{name}: {subject}\r\n" for name in extra
    )
    message = (head + "\r\n" + "\r\n".join(body) + trailing).encode()
    signed = sign(message, [RSA_KEY, ED_KEY])
    assert _verifies(signed, 0) and _verifies(signed, 1)

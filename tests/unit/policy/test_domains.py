"""Domain names, DKIM keys, records and how DNS answers are judged; pure."""

from __future__ import annotations

import base64

import pytest
from cryptography.exceptions import InvalidTag

from libs.domain_keys import Sealer
from services.policy.domains import (
    DnsAnswer,
    Purpose,
    Record,
    RecordStatus,
    check_records,
    domain_problem,
    generate_keys,
    normalise_domain,
    records_for,
)

SPF = "_spf.postwire.test"


def _records() -> list[Record]:
    return records_for(
        "example.org",
        rsa_selector="pwr-1",
        rsa_public="QUJD",
        ed25519_selector="pwe-1",
        ed25519_public="REVG",
        spf_include=SPF,
        return_path_host="bounces.postwire.test",
        return_path_label="pw-bounces",
    )


def _all_found() -> dict[str, DnsAnswer]:
    return {
        "TXT pwr-1._domainkey.example.org": DnsAnswer(("v=DKIM1; k=rsa; p=QUJD",)),
        "TXT pwe-1._domainkey.example.org": DnsAnswer(("v=DKIM1;k=ed25519;p=REVG",)),
        "TXT example.org": DnsAnswer(("google-site-verification=x", f"v=spf1 mx include:{SPF} -all")),
        "CNAME pw-bounces.example.org": DnsAnswer(("Bounces.Postwire.Test",)),
        "TXT _dmarc.example.org": DnsAnswer(missing=True),
    }


def test_names() -> None:
    assert normalise_domain(" Mail.Example.ORG. ") == "mail.example.org"
    assert normalise_domain("bücher.example") == "xn--bcher-kva.example"
    assert domain_problem("mail.example.org") is None
    for bad in ("localhost", "a..b", "-a.example", "a-.example", "10.0.0.1", "x" * 64 + ".org", ""):
        assert domain_problem(bad), bad


def test_keys_are_fresh_and_in_dkim_form() -> None:
    one, two = generate_keys(), generate_keys()
    assert one.rsa_selector != two.rsa_selector and one.rsa_public != two.rsa_public
    assert len(base64.b64decode(one.ed25519_public)) == 32
    assert one.rsa_private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_all_required_found_verifies_even_without_dmarc() -> None:
    statuses, verified = check_records(_records(), _all_found(), SPF)
    assert verified
    assert statuses == {
        "DKIM_RSA": RecordStatus.FOUND,
        "DKIM_ED25519": RecordStatus.FOUND,
        "SPF": RecordStatus.FOUND,
        "RETURN_PATH": RecordStatus.FOUND,
        "DMARC": RecordStatus.MISSING,
    }


@pytest.mark.parametrize(
    ("key", "answer", "purpose", "status"),
    [
        (
            "TXT pwr-1._domainkey.example.org",
            DnsAnswer(("v=DKIM1; k=rsa; p=OTHER",)),
            Purpose.DKIM_RSA,
            RecordStatus.MISMATCH,
        ),
        (
            "TXT pwe-1._domainkey.example.org",
            DnsAnswer(("v=DKIM1; k=rsa; p=REVG",)),
            Purpose.DKIM_ED25519,
            RecordStatus.MISMATCH,
        ),
        (
            "TXT example.org",
            DnsAnswer(("v=spf1 include:_spf.postwire.test.evil ~all",)),
            Purpose.SPF,
            RecordStatus.MISMATCH,
        ),
        ("TXT example.org", DnsAnswer(("include:_spf.postwire.test",)), Purpose.SPF, RecordStatus.MISMATCH),
        ("CNAME pw-bounces.example.org", DnsAnswer(missing=True), Purpose.RETURN_PATH, RecordStatus.MISSING),
        (
            "CNAME pw-bounces.example.org",
            DnsAnswer(failed=True),
            Purpose.RETURN_PATH,
            RecordStatus.LOOKUP_FAILED,
        ),
    ],
)
def test_one_wrong_record_keeps_the_domain_pending(
    key: str, answer: DnsAnswer, purpose: Purpose, status: RecordStatus
) -> None:
    answers = _all_found() | {key: answer}
    statuses, verified = check_records(_records(), answers, SPF)
    assert statuses[purpose.name] is status
    assert not verified


def test_sealed_keys_open_only_with_the_same_secret_and_domain() -> None:
    sealer = Sealer("s3cret")
    sealed = sealer.seal(b"-----BEGIN PRIVATE KEY-----x", "domain-1")
    assert b"PRIVATE" not in sealed
    assert sealer.open(sealed, "domain-1") == b"-----BEGIN PRIVATE KEY-----x"
    with pytest.raises(InvalidTag):
        sealer.open(sealed, "domain-2")
    with pytest.raises(InvalidTag):
        Sealer("other").open(sealed, "domain-1")
    assert sealer.seal(b"same", "d") != sealer.seal(b"same", "d")

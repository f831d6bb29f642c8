"""Sending domains without I/O: names, DKIM keys, the records to publish, and judging what DNS
answered.

Keys are made through `cryptography` (OpenSSL): RSA-2048 and Ed25519 (RFC 8463), the private
halves as PKCS#8 PEM, which libs.domain_keys.Sealer seals for storage.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from postwire.v1 import domain_service_pb2 as _pb

__all__ = [
    "DnsAnswer",
    "DomainKeys",
    "DomainState",
    "Purpose",
    "Record",
    "RecordStatus",
    "check_records",
    "domain_problem",
    "generate_keys",
    "normalise_domain",
    "records_for",
]

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


# The values ARE the public proto's, so the API and the stored record_status cannot drift apart;
# the names are what record_status is keyed by in the database.
class Purpose(IntEnum):
    DKIM_RSA = _pb.DNS_RECORD_PURPOSE_DKIM_RSA
    DKIM_ED25519 = _pb.DNS_RECORD_PURPOSE_DKIM_ED25519
    SPF = _pb.DNS_RECORD_PURPOSE_SPF
    RETURN_PATH = _pb.DNS_RECORD_PURPOSE_RETURN_PATH
    DMARC = _pb.DNS_RECORD_PURPOSE_DMARC


class RecordStatus(IntEnum):
    UNCHECKED = _pb.DNS_RECORD_STATUS_UNSPECIFIED  # not looked up yet
    FOUND = _pb.DNS_RECORD_STATUS_FOUND
    MISSING = _pb.DNS_RECORD_STATUS_MISSING
    MISMATCH = _pb.DNS_RECORD_STATUS_MISMATCH
    LOOKUP_FAILED = _pb.DNS_RECORD_STATUS_LOOKUP_FAILED


class DomainState(IntEnum):
    PENDING = _pb.DOMAIN_STATE_PENDING
    VERIFIED = _pb.DOMAIN_STATE_VERIFIED

    @classmethod
    def of(cls, verified: bool) -> DomainState:
        return cls.VERIFIED if verified else cls.PENDING


def normalise_domain(name: str) -> str:
    """Lowercase A-label form; '' when it cannot be encoded."""
    name = name.strip().rstrip(".").lower()
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return ""


def domain_problem(name: str) -> str | None:
    labels = name.split(".")
    if not name or len(name) > 253 or len(labels) < 2:
        return "a domain name with at least two labels, e.g. mail.example.org"
    if not all(_LABEL.fullmatch(label) for label in labels):
        return "letters, digits and '-' in each label, 1-63 characters, not starting or ending with '-'"
    if labels[-1].isdigit():
        return "a domain name, not an IP address"
    return None


@dataclass(frozen=True, slots=True)
class DomainKeys:
    rsa_selector: str
    rsa_private_pem: bytes
    rsa_public: str  # base64 SubjectPublicKeyInfo DER, as DKIM's p= wants for k=rsa
    ed25519_selector: str
    ed25519_private_pem: bytes
    ed25519_public: str  # base64 of the raw 32-byte key, as RFC 8463 wants


def generate_keys() -> DomainKeys:
    tag = secrets.token_hex(4)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    pem, pkcs8, clear = (
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return DomainKeys(
        rsa_selector=f"pwr-{tag}",
        rsa_private_pem=rsa_key.private_bytes(pem, pkcs8, clear),
        rsa_public=base64.b64encode(
            rsa_key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).decode(),
        ed25519_selector=f"pwe-{tag}",
        ed25519_private_pem=ed_key.private_bytes(pem, pkcs8, clear),
        ed25519_public=base64.b64encode(
            ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        ).decode(),
    )


@dataclass(frozen=True, slots=True)
class Record:
    purpose: Purpose
    type: str
    name: str
    value: str
    required: bool


def records_for(
    domain: str,
    *,
    rsa_selector: str,
    rsa_public: str,
    ed25519_selector: str,
    ed25519_public: str,
    spf_include: str,
    return_path_host: str,
    return_path_label: str,
) -> list[Record]:
    return [
        Record(
            Purpose.DKIM_RSA,
            "TXT",
            f"{rsa_selector}._domainkey.{domain}",
            f"v=DKIM1; k=rsa; p={rsa_public}",
            True,
        ),
        Record(
            Purpose.DKIM_ED25519,
            "TXT",
            f"{ed25519_selector}._domainkey.{domain}",
            f"v=DKIM1; k=ed25519; p={ed25519_public}",
            True,
        ),
        Record(Purpose.SPF, "TXT", domain, f"v=spf1 include:{spf_include} ~all", True),
        Record(Purpose.RETURN_PATH, "CNAME", f"{return_path_label}.{domain}", return_path_host, True),
        Record(
            Purpose.DMARC,
            "TXT",
            f"_dmarc.{domain}",
            f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}",
            False,
        ),
    ]


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """What DNS said for one name: its values (TXT strings joined, CNAME targets without the
    trailing dot), or that the name has none (`missing`), or that the lookup failed."""

    values: tuple[str, ...] = ()
    missing: bool = False
    failed: bool = False


def _tags(value: str) -> dict[str, str]:
    tags = {}
    for part in value.split(";"):
        key, _, val = part.partition("=")
        if key.strip():
            tags[key.strip().lower()] = "".join(val.split())
    return tags


def _matches(record: Record, found: str, spf_include: str) -> bool:
    if record.purpose in (Purpose.DKIM_RSA, Purpose.DKIM_ED25519):
        want, got = _tags(record.value), _tags(found)
        return got.get("v") == "DKIM1" and got.get("k", "rsa") == want["k"] and got.get("p") == want["p"]
    if record.purpose is Purpose.SPF:
        terms = found.lower().split()
        return bool(terms) and terms[0] == "v=spf1" and f"include:{spf_include.lower()}" in terms
    if record.purpose is Purpose.RETURN_PATH:
        return found.rstrip(".").lower() == record.value.lower()
    return _tags(found).get("v") == "DMARC1"


def check_records(
    records: Sequence[Record], answers: dict[str, DnsAnswer], spf_include: str
) -> tuple[dict[str, RecordStatus], bool]:
    """Each record's status (keyed by purpose name) and whether every required one was found."""
    statuses: dict[str, RecordStatus] = {}
    for record in records:
        answer = answers.get(f"{record.type} {record.name}", DnsAnswer(failed=True))
        if answer.failed:
            status = RecordStatus.LOOKUP_FAILED
        elif answer.missing or not answer.values:
            status = RecordStatus.MISSING
        elif any(_matches(record, value, spf_include) for value in answer.values):
            status = RecordStatus.FOUND
        else:
            status = RecordStatus.MISMATCH
        statuses[record.purpose.name] = status
    verified = all(statuses[r.purpose.name] is RecordStatus.FOUND for r in records if r.required)
    return statuses, verified

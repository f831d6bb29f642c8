"""DKIM signing cost per message: `python -m bench.dkim` (also run by `make bench`).

mta_worker signs every recipient's copy at every attempt, so this is per-delivery CPU. Measures
libs.mail.dkim.sign for RSA-2048 alone, Ed25519 alone and both (the production case), on a 2 KB
and a 20 KB message; the bare OpenSSL signing calls, so the canonicalisation and header work in
Python can be read off as the difference; and dkimpy's pure-Python RSA, which the signer
replaced, for comparison. Each figure is CPU time per call, the mean of the fastest of several
rounds: the box is shared, and a neighbour's burst should not be charged to the signer.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dkim
from cryptography.hazmat.backends.openssl import backend
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from libs.mail.dkim import SigningKey, sign

DOMAIN = "mail.example.org"
TARGET_MS = 0.5

HEADERS = (
    "From: Acme Receipts <receipts@mail.example.org>\r\n"
    "To: Ada Lovelace <ada@example.net>\r\n"
    "Subject: Your order A-000042 is confirmed\r\n"
    "Date: Wed, 02 Dec 2026 10:00:00 +0000\r\n"
    "Message-ID: <0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b@mail.example.org>\r\n"
    "MIME-Version: 1.0\r\n"
    "List-Unsubscribe: <https://u.postwire.example/u/4fzq2m7xk3v5pa6hjt2nqwb3ce>,\r\n"
    " <mailto:unsubscribe+4fzq2m7xk3v5pa6hjt2nqwb3ce@postwire.example>\r\n"
    "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    "Feedback-ID: receipts:t-42:transactional:postwire\r\n"
    "X-Postwire-Message-Id: 0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\r\n"
    'Content-Type: multipart/alternative; boundary="=_pw_boundary"\r\n'
    "\r\n"
)
TEXT_LINE = "Item {i}: Widget, quantity 2, 9.99 EUR each; ships from London within two days.\r\n"
HTML_LINE = '    <tr><td class=3D"item">Widget {i}</td><td class=3D"qty">2</td><td>9.99 EUR</td></tr>\r\n'


def message(size: int) -> bytes:
    """A multipart receipt of about `size` bytes, built the way the router builds one (CRLF,
    quoted-printable HTML with indentation, unsubscribe and feedback headers)."""
    text: list[str] = []
    html: list[str] = []
    length = len(HEADERS)
    while length < size - 200:
        text.append(TEXT_LINE.format(i=len(text)))
        html.append(HTML_LINE.format(i=len(html)))
        length += len(text[-1]) + len(html[-1])
    body = (
        "--=_pw_boundary\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + "".join(text)
        + "--=_pw_boundary\r\nContent-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n<table>\r\n"
        + "".join(html)
        + "</table>\r\n--=_pw_boundary--\r\n"
    )
    return (HEADERS + body).encode()


def per_call_ms(call: Callable[[], object], *, calls: int, rounds: int) -> tuple[float, float]:
    """(fastest round, median round), in ms of this process's CPU per call: on a shared box, wall
    time would also count the time other processes held the core."""
    call()
    means = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(calls):
            call()
        means.append((time.process_time() - start) / calls * 1000)
    return min(means), statistics.median(means)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine() or "unknown CPU"


Case = tuple[str, Callable[[], object], int]


def cases(msg: bytes, rsa_key: SigningKey, ed_key: SigningKey, rsa_pem: bytes, calls: int) -> list[Case]:
    def dkimpy() -> object:
        return dkim.sign(
            msg,
            b"pwr-bench",
            DOMAIN.encode(),
            rsa_pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[h.encode() for h in ("from", "to", "subject", "date", "message-id")],
        )

    return [
        ("libs.mail.dkim, RSA-2048 + Ed25519 (production)", lambda: sign(msg, [rsa_key, ed_key]), calls),
        ("libs.mail.dkim, RSA-2048 alone", lambda: sign(msg, [rsa_key]), calls),
        ("libs.mail.dkim, Ed25519 alone", lambda: sign(msg, [ed_key]), calls),
        # ~20x slower: fewer calls, or the run takes minutes.
        ("dkimpy, RSA-2048 (pure-Python RSA), relaxed/relaxed", dkimpy, max(5, calls // 20)),
    ]


def run(calls: int, rounds: int) -> str:
    rsa_private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_private = ed25519.Ed25519PrivateKey.generate()
    rsa_key = SigningKey(DOMAIN, "pwr-bench", rsa_private)
    ed_key = SigningKey(DOMAIN, "pwe-bench", ed_private)
    rsa_pem = rsa_private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    load_before = os.getloadavg()[0]

    # The bare primitives on a header hash input of the size sign() makes.
    hash_input = b"x" * 900
    prim_rsa = per_call_ms(
        lambda: rsa_private.sign(hash_input, padding.PKCS1v15(), hashes.SHA256()), calls=calls, rounds=rounds
    )
    prim_ed = per_call_ms(
        lambda: ed_private.sign(hashlib.sha256(hash_input).digest()), calls=calls, rounds=rounds
    )
    rows = [
        f"| - | OpenSSL RSA-2048 sign of a 900-byte input, nothing else | {prim_rsa[0]:.3f} | {prim_rsa[1]:.3f} |",
        f"| - | OpenSSL Ed25519 sign of its SHA-256, nothing else | {prim_ed[0]:.3f} | {prim_ed[1]:.3f} |",
    ]
    overheads = []
    for size in (2048, 20480):
        msg = message(size)
        label = f"{len(msg) / 1024:.0f} KB"
        for name, call, n in cases(msg, rsa_key, ed_key, rsa_pem, calls):
            best, median = per_call_ms(call, calls=n, rounds=rounds)
            rows.append(f"| {label} | {name} | {best:.3f} | {median:.3f} |")
            if "production" in name:
                overheads.append(f"{label}: {best - prim_rsa[0] - prim_ed[0]:.3f} ms")

    return "\n".join(
        [
            "# DKIM signing benchmark",
            "",
            f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
            f"- machine: nproc {len(os.sched_getaffinity(0))}, {cpu_model()}, Python {platform.python_version()},"
            f" {backend.openssl_version_text()}; load average {load_before:.2f} at start",
            f"- {calls} signings per round ({max(5, calls // 20)} for dkimpy), {rounds} rounds, one core",
            f"- target: <= {TARGET_MS} ms for both signatures of a 2 KB message. OpenSSL's RSA-2048 sign is"
            " most of it and sets the floor on a given CPU (compare `openssl speed rsa2048`).",
            "- Python work of the production case (fastest round minus both bare primitives): "
            + ", ".join(overheads),
            "",
            "| message | signer | ms/msg (fastest round) | ms/msg (median round) |",
            "|:---|:---|---:|---:|",
            *rows,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dkim")
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/dkim.md"))
    args = parser.parse_args()
    table = run(args.calls, args.rounds)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)


if __name__ == "__main__":
    main()

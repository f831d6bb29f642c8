"""The capture SMTP sink and web inbox, over real sockets (aiosmtplib client, urllib)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

import aiosmtplib
import pytest

from libs.capture import DATA_SIZE_LIMIT, InboxWebServer, ReceivedMessage, SmtpSink

REPO_ROOT = Path(__file__).resolve().parents[2]

# Never route loopback requests through an HTTP(S)_PROXY from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


@pytest.fixture
def inbox(sink: SmtpSink) -> Iterator[InboxWebServer]:
    with InboxWebServer(sink) as running:
        yield running


def address(directive: str) -> str:
    """A recipient unique to this test, so per-address scripting state never leaks."""
    return f"{directive}+{uuid.uuid4().hex[:10]}@example.com"


def raw_message(subject: str = "hello", body: bytes = b"Hi there.\r\n") -> bytes:
    return (
        b"From: Sender <sender@example.net>\r\n"
        b"To: someone@example.com\r\n"
        b"Subject: " + subject.encode("ascii") + b"\r\n"
        b"Message-ID: <" + uuid.uuid4().hex.encode("ascii") + b"@example.net>\r\n"
        b"\r\n" + body
    )


async def send(
    sink: SmtpSink, recipients: list[str], message: bytes | None = None, sender: str = "sender@example.net"
) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
    return await aiosmtplib.send(
        message if message is not None else raw_message(),
        sender=sender,
        recipients=recipients,
        hostname=sink.host,
        port=sink.port,
        timeout=10,
    )


def rcpt_codes(sink: SmtpSink, recipient: str, phase: str = "RCPT") -> list[str]:
    return [code for addr, ph, code in sink.attempts() if addr == recipient and ph == phase]


async def http_get(url: str) -> tuple[int, str, bytes]:
    """GET ``url`` off the event loop; returns (status, content type, body) also for 4xx."""

    def fetch() -> tuple[int, str, bytes]:
        try:
            with _OPENER.open(url, timeout=10) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read()
        except urllib.error.HTTPError as error:
            try:
                return error.code, error.headers.get("Content-Type", ""), error.read()
            finally:
                error.close()

    return await asyncio.to_thread(fetch)


class _IframeFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.iframes: list[dict[str, str | None]] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "iframe":
            self.iframes.append(dict(attrs))
        if tag == "script":
            self.scripts += 1


# -- SMTP sink ---------------------------------------------------------------------------


async def test_records_exact_bytes_and_envelope(sink: SmtpSink) -> None:
    recipient = address("inbox")
    # Dot-stuffing, an 8-bit (non UTF-8) byte and trailing whitespace must all survive.
    raw = raw_message("exact", b".leading dot\r\nlatin-1 caf\xe9  \r\n..two dots\r\n")
    before = time.time()

    errors, reply = await send(sink, [recipient], raw)

    assert errors == {}
    assert reply.startswith("2.0.0")
    [message] = sink.messages()
    assert message.data == raw
    assert message.mail_from == "sender@example.net"
    assert message.rcpt_tos == (recipient,)
    assert f"SIZE={len(raw)}" in message.mail_options
    assert before <= message.received_at <= time.time()
    assert message.header("Subject") == "exact"
    assert message.header("X-Absent") is None
    assert message.parsed()["From"].addresses[0].addr_spec == "sender@example.net"
    assert rcpt_codes(sink, recipient) == ["250"]
    assert rcpt_codes(sink, recipient, "DATA") == ["250"]


async def test_smtputf8_advertised_and_honoured(sink: SmtpSink) -> None:
    recipient = f"użytkownik+{uuid.uuid4().hex[:8]}@example.com"
    raw = "Subject: zażółć\r\nTo: użytkownik@example.com\r\n\r\nciało\r\n".encode()

    async with aiosmtplib.SMTP(hostname=sink.host, port=sink.port, timeout=10) as client:
        assert client.supports_extension("smtputf8")
        assert client.esmtp_extensions["size"] == str(DATA_SIZE_LIMIT) == str(40 * 1024 * 1024)
        await client.sendmail("nadawca@example.net", [recipient], raw, mail_options=["SMTPUTF8"])

    [message] = sink.messages()
    assert message.rcpt_tos == (recipient,)
    assert "SMTPUTF8" in message.mail_options
    assert message.data == raw
    assert message.header("Subject") == "zażółć"


async def test_smtputf8_can_be_switched_off() -> None:
    with SmtpSink(smtputf8=False) as plain:
        async with aiosmtplib.SMTP(hostname=plain.host, port=plain.port, timeout=10) as client:
            assert not client.supports_extension("smtputf8")
            assert client.supports_extension("size")
            with pytest.raises(aiosmtplib.SMTPNotSupported):
                await client.sendmail("a@example.net", ["b@example.com"], b"\r\n", mail_options=["SMTPUTF8"])


async def test_null_reverse_path_is_accepted_as_empty_sender(sink: SmtpSink) -> None:
    # Bounces/DSNs use MAIL FROM:<>; aiosmtplib.send() refuses an empty sender for raw
    # messages, so drive the client directly.
    async with aiosmtplib.SMTP(hostname=sink.host, port=sink.port, timeout=10) as client:
        await client.sendmail("", [address("bounce")], raw_message("bounce"))
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await client.sendmail("a@example.net", [""], raw_message())

    [message] = sink.messages()
    assert message.mail_from == ""


async def test_greylist_defers_the_first_n_attempts_then_accepts(sink: SmtpSink) -> None:
    recipient = address("greylist2")

    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await send(sink, [recipient])
        [error] = refused.value.recipients
        assert (error.code, error.message) == (451, "4.7.1 Greylisted, try again later")
        assert sink.messages() == []
    # The count is per address, case-insensitively.
    await send(sink, [recipient.upper()])

    assert rcpt_codes(sink, recipient) == ["451", "451"]
    assert rcpt_codes(sink, recipient.upper()) == ["250"]
    [message] = sink.messages()
    assert message.rcpt_tos == (recipient.upper(),)
    # An unrelated address with the same directive has its own counter.
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await send(sink, [address("GreyList2")])


async def test_tempfail_never_accepts(sink: SmtpSink) -> None:
    recipient = address("tempfail")
    for _ in range(3):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await send(sink, [recipient])
        assert refused.value.recipients[0].code == 451
    assert rcpt_codes(sink, recipient) == ["451"] * 3
    assert sink.messages() == []


async def test_permfail_is_refused_and_only_accepted_recipients_are_recorded(sink: SmtpSink) -> None:
    doomed, fine = address("permfail"), address("ok")

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await send(sink, [doomed])
    assert refused.value.recipients[0].code == 550
    assert refused.value.recipients[0].message == "5.1.1 User unknown"
    assert sink.messages() == []

    errors, _ = await send(sink, [doomed, fine])
    assert errors[doomed].code == 550
    [message] = sink.messages()
    assert message.rcpt_tos == (fine,)


async def test_datafail_rejects_the_whole_transaction(sink: SmtpSink) -> None:
    doomed, fine = address("datafail"), address("ok")

    with pytest.raises(aiosmtplib.SMTPDataError) as rejected:
        await send(sink, [fine, doomed])

    assert (rejected.value.code, rejected.value.message) == (554, "5.6.0 Message rejected")
    assert rcpt_codes(sink, doomed) == ["250"]
    assert rcpt_codes(sink, fine, "DATA") == ["554"]
    assert sink.messages() == []


async def test_datatemp_defers_at_end_of_data(sink: SmtpSink) -> None:
    with pytest.raises(aiosmtplib.SMTPDataError) as deferred:
        await send(sink, [address("datatemp")])
    assert deferred.value.code == 451
    assert deferred.value.message == "4.3.0 Temporary failure at end of data"
    assert sink.messages() == []


async def test_disconnect_drops_the_first_delivery_then_accepts(sink: SmtpSink) -> None:
    recipient = address("disconnect")

    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await send(sink, [recipient])
    assert sink.messages() == []
    assert rcpt_codes(sink, recipient, "DATA") == ["disconnect"]

    await send(sink, [recipient])
    [message] = sink.messages()
    assert message.rcpt_tos == (recipient,)
    assert rcpt_codes(sink, recipient, "DATA") == ["disconnect", "250"]


async def test_hold_records_the_message_then_answers_the_final_dot_late(sink: SmtpSink) -> None:
    recipient = address("hold3")
    client = aiosmtplib.SMTP(hostname=sink.host, port=sink.port, timeout=10)
    await client.connect()
    started = time.monotonic()
    sending = asyncio.create_task(client.sendmail("sender@example.net", [recipient], raw_message()))
    # Recorded while the reply is still held: a client killed now has delivered without knowing.
    await asyncio.to_thread(sink.wait_for, lambda messages: len(messages) == 1, 5)
    assert not sending.done()
    assert sink.open_past_dot(time.time()) == 1
    await sending
    assert time.monotonic() - started >= 3.0
    await client.quit()
    # Closed connections no longer count: that transaction got its answer.
    assert sink.open_past_dot(time.time()) == 0


async def test_slow_answers_rcpt_and_the_final_dot_late(sink: SmtpSink) -> None:
    started = time.monotonic()
    await send(sink, [address("slow1")])
    assert time.monotonic() - started >= 2.0
    assert len(sink.messages()) == 1


async def test_unscripted_sink_accepts_every_directive() -> None:
    with SmtpSink(scripted=False) as plain:
        recipients = [address(d) for d in ("permfail", "tempfail", "datafail", "disconnect")]
        errors, _ = await send(plain, recipients)
        assert errors == {}
        [message] = plain.messages()
        assert message.rcpt_tos == tuple(recipients)


async def test_wait_for_returns_when_a_message_arrives_and_times_out_descriptively(sink: SmtpSink) -> None:
    recipient = address("waited")
    waiter = asyncio.create_task(
        asyncio.to_thread(sink.wait_for, lambda msgs: any(recipient in m.rcpt_tos for m in msgs), 10)
    )
    await send(sink, [recipient])
    seen = await waiter
    assert [m.rcpt_tos for m in seen] == [(recipient,)]

    # A predicate may call back into the sink without deadlocking.
    assert sink.wait_for(lambda msgs: len(sink.messages()) == len(msgs) == 1, 1) == seen

    with pytest.raises(TimeoutError, match=r"1 message\(s\) received"):
        await asyncio.to_thread(sink.wait_for, lambda msgs: len(msgs) > 1, 0.2)


async def test_clear_forgets_messages_attempts_and_scripting_state(sink: SmtpSink) -> None:
    recipient = address("greylist1")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await send(sink, [recipient])
    await send(sink, [recipient])
    assert len(sink.messages()) == 1

    sink.clear()

    assert sink.messages() == [] and sink.attempts() == []
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await send(sink, [recipient])


async def test_stop_closes_open_client_connections() -> None:
    stopping = SmtpSink()
    stopping.start()
    client = aiosmtplib.SMTP(hostname=stopping.host, port=stopping.port, timeout=10)
    await client.connect()
    try:
        await asyncio.to_thread(stopping.stop)
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await client.noop()
    finally:
        client.close()
    stopping.stop()  # idempotent


def test_port_in_use_is_reported_by_start(sink: SmtpSink) -> None:
    with pytest.raises(OSError):
        SmtpSink(sink.host, sink.port).start()


async def test_store_dir_persists_and_reloads(tmp_path: Path) -> None:
    store = tmp_path / "inbox"
    first_run = SmtpSink(store_dir=store)
    with first_run:
        await send(first_run, [address("a")], raw_message("one"))
        await send(first_run, [address("b")], raw_message("two"))
        kept = first_run.messages()

    assert sorted(p.name for p in store.iterdir()) == [
        "00000001.eml",
        "00000001.json",
        "00000002.eml",
        "00000002.json",
    ]
    assert (store / "00000002.eml").read_bytes() == kept[1].data
    sidecar = json.loads((store / "00000001.json").read_text())
    assert sidecar["rcpt_tos"] == list(kept[0].rcpt_tos)
    assert sidecar["received_at"] == kept[0].received_at

    with SmtpSink(store_dir=store) as second_run:
        assert second_run.messages() == kept
        await send(second_run, [address("c")], raw_message("three"))
        reloaded = second_run.messages()
        assert [m.index for m in reloaded] == [1, 2, 3]
        assert reloaded[2].header("Subject") == "three"

        second_run.clear()
        assert list(store.iterdir()) == []


# -- web inbox ---------------------------------------------------------------------------


def hostile_message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Mallory <mallory@example.net>"
    message["To"] = "victim@example.com"
    message["Subject"] = "<script>alert('subject')</script> & friends"
    message.set_content("Plain <b>text</b> & more\n")
    message.add_alternative(
        '<p onclick="steal()">Hello &amp; "welcome"</p><script>alert("body")</script>\n',
        subtype="html",
    )
    message.add_attachment(
        b"%PDF-1.4 pretend\n", maintype="application", subtype="pdf", filename="report <1>.pdf"
    )
    return message


async def test_inbox_lists_and_renders_messages_safely(sink: SmtpSink, inbox: InboxWebServer) -> None:
    base = f"http://{inbox.host}:{inbox.port}"
    email_message = hostile_message()
    recipient = address("viewer")
    await aiosmtplib.send(
        email_message, recipients=[recipient], hostname=sink.host, port=sink.port, timeout=10
    )
    await send(sink, [address("later")], raw_message("second"))
    first, second = sink.messages()

    status, content_type, body = await http_get(base + "/")
    page = body.decode()
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    assert "&lt;script&gt;alert(&#x27;subject&#x27;)&lt;/script&gt; &amp; friends" in page
    assert "<script" not in page
    assert recipient in page and "mallory@example.net" in page
    # Newest first.
    assert page.index(f'href="/messages/{second.index}"') < page.index(f'href="/messages/{first.index}"')

    status, _, body = await http_get(f"{base}/messages/{first.index}")
    page = body.decode()
    assert status == 200
    assert "&lt;script&gt;alert(&#x27;subject&#x27;)&lt;/script&gt;" in page
    assert "<pre>Plain &lt;b&gt;text&lt;/b&gt; &amp; more\n</pre>" in page
    parser = _IframeFinder()
    parser.feed(page)
    assert parser.scripts == 0
    [iframe] = parser.iframes
    assert "sandbox" in iframe and not iframe["sandbox"]  # bare sandbox: no allow-scripts
    html_part = email_message.get_body(preferencelist=("html",))
    assert html_part is not None
    assert iframe["srcdoc"] == html_part.get_content()
    assert 'srcdoc="&lt;p onclick=&quot;steal()&quot;&gt;Hello &amp;amp;' in page
    assert "report &lt;1&gt;.pdf" in page and "application/pdf" in page
    assert f'href="/messages/{first.index}.eml"' in page

    status, content_type, body = await http_get(f"{base}/messages/{first.index}/attachments/0")
    assert (status, content_type, body) == (200, "application/pdf", b"%PDF-1.4 pretend\n")

    status, content_type, body = await http_get(f"{base}/messages/{first.index}.eml")
    assert (status, content_type) == (200, "message/rfc822")
    assert body == first.data

    status, content_type, body = await http_get(base + "/api/messages")
    assert (status, content_type) == (200, "application/json")
    listing = json.loads(body)
    assert [entry["index"] for entry in listing] == [first.index, second.index]
    assert listing[0] == {
        "index": first.index,
        "mail_from": first.mail_from,
        "rcpt_tos": [recipient],
        "subject": "<script>alert('subject')</script> & friends",
        "received_at": first.received_at,
    }


@pytest.mark.parametrize(
    "path",
    [
        "/messages/999",
        "/messages/999.eml",
        "/messages/1/attachments/7",
        "/messages/abc",
        "/nope",
        "/messages/",
    ],
)
async def test_inbox_unknown_paths_are_404(sink: SmtpSink, inbox: InboxWebServer, path: str) -> None:
    await send(sink, [address("only")])
    status, content_type, body = await http_get(f"http://{inbox.host}:{inbox.port}{path}")
    assert status == 404
    assert content_type.startswith("text/html")
    assert b"Traceback" not in body


async def test_inbox_shows_messages_loaded_from_store(tmp_path: Path) -> None:
    with SmtpSink(store_dir=tmp_path) as first_run:
        await send(first_run, [address("persisted")], raw_message("kept across restarts"))
    with SmtpSink(store_dir=tmp_path) as second_run, InboxWebServer(second_run) as web:
        status, _, body = await http_get(f"http://{web.host}:{web.port}/")
    assert status == 200
    assert b"kept across restarts" in body


# -- command line ------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_cli_serves_both_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "libs.capture",
        "--smtp",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--store",
        str(tmp_path),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        smtp_line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        http_line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        smtp_port = int(smtp_line.rsplit(":", 1)[1])
        assert http_line.startswith("Inbox at http://127.0.0.1:")

        await aiosmtplib.send(
            raw_message("via cli"),
            sender="a@example.net",
            recipients=["b@example.com"],
            hostname="127.0.0.1",
            port=smtp_port,
            timeout=10,
        )
        status, _, body = await http_get(http_line.split(" ", 2)[2].strip())
        assert status == 200 and b"via cli" in body
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    assert b"stopped" in stdout
    assert (tmp_path / "00000001.eml").exists()


def test_received_message_is_a_frozen_value() -> None:
    message = ReceivedMessage(1, "a@x", ("b@y",), (), b"Subject: s\r\n\r\nbody\r\n", 1.0)
    with pytest.raises(AttributeError):
        message.index = 2  # type: ignore[misc]
    assert message.header("subject") == "s"
    assert message == ReceivedMessage(1, "a@x", ("b@y",), (), b"Subject: s\r\n\r\nbody\r\n", 1.0)

"""A read-only web inbox over an SmtpSink (stdlib http.server, no external assets).

Every value taken from a message is HTML-escaped, HTML bodies are shown only inside a
sandboxed ``srcdoc`` iframe, and attachments are served as downloads under a sandboxing CSP,
so a hostile message cannot run script in the inbox origin.
"""

from __future__ import annotations

import html
import json
import logging
import mimetypes
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from email.message import EmailMessage, Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from libs.capture.smtp_sink import ReceivedMessage, SmtpSink

__all__ = ["InboxWebServer"]

log = logging.getLogger(__name__)

_MESSAGE = re.compile(r"/messages/([0-9]{1,18})")
_RAW = re.compile(r"/messages/([0-9]{1,18})\.eml")
_ATTACHMENT = re.compile(r"/messages/([0-9]{1,18})/attachments/([0-9]{1,9})")
_SAFE_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")

# Pages carry no script of their own; the policy is defence in depth behind escaping.
_PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data: https: http:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Served message bytes never render as an active document in our origin.
_DOWNLOAD_CSP = "sandbox; default-src 'none'"

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.3rem}h2{font-size:1.1rem;margin-top:1.5rem}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}
td.k{white-space:nowrap;font-weight:600;width:1%}
td,pre{overflow-wrap:anywhere}
pre{background:#f8f8f8;border:1px solid #ddd;padding:.75rem;white-space:pre-wrap}
iframe{width:100%;height:32rem;border:1px solid #ddd;background:#fff}
.muted{color:#777}
"""


class InboxWebServer:
    """Serves an HTML/JSON view of ``sink``'s messages from a daemon thread."""

    def __init__(self, sink: SmtpSink, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sink = sink
        self._host = host
        self._requested_port = port
        self._httpd: _InboxHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        """The address the server binds to."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the requested one before start())."""
        if self._httpd is None:
            return self._requested_port
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL of the inbox, e.g. ``http://127.0.0.1:8025/``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        """Bind (synchronously, so the port is live on return) and serve in a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("InboxWebServer is already running")
        httpd = _InboxHTTPServer((self._host, self._requested_port), _InboxHandler, self._sink)
        thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="inbox-web", daemon=True
        )
        thread.start()
        self._httpd, self._thread = httpd, thread

    def stop(self) -> None:
        """Stop serving and close the listening socket. Idempotent."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        httpd.shutdown()
        thread.join()
        httpd.server_close()
        self._httpd = self._thread = None

    def __enter__(self) -> InboxWebServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _InboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        sink: SmtpSink,
    ) -> None:
        self.sink = sink
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


class _InboxHandler(BaseHTTPRequestHandler):
    server: _InboxHTTPServer
    server_version = "PostwireInbox/1"
    sys_version = ""
    # HTTP/1.0 (the default) closes after each response, so no idle keep-alive threads
    # outlive stop().

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        try:
            self._route(path)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away; nothing to answer
        except Exception:
            # Never leak a traceback into the page; the log keeps the detail.
            log.exception("inbox request failed: %s", path)
            self._send_text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error\n")

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- routing ---------------------------------------------------------------------

    def _route(self, path: str) -> None:
        if path == "/":
            self._send_html(HTTPStatus.OK, _render_index(self.server.sink.messages()))
            return
        if path == "/api/messages":
            self._send_json(_api_listing(self.server.sink.messages()))
            return
        if match := _RAW.fullmatch(path):
            message = self._find(int(match.group(1)))
            if message is not None:
                self._send_bytes(
                    message.data,
                    "message/rfc822",
                    _disposition(f"{message.index}.eml"),
                )
            return
        if match := _MESSAGE.fullmatch(path):
            message = self._find(int(match.group(1)))
            if message is not None:
                self._send_html(HTTPStatus.OK, _render_message(message))
            return
        if match := _ATTACHMENT.fullmatch(path):
            message = self._find(int(match.group(1)))
            if message is not None:
                self._serve_attachment(message, int(match.group(2)))
            return
        self._not_found()

    def _find(self, index: int) -> ReceivedMessage | None:
        for message in self.server.sink.messages():
            if message.index == index:
                return message
        self._not_found()
        return None

    def _serve_attachment(self, message: ReceivedMessage, number: int) -> None:
        parsed = message.parsed()
        attachments = _attachments(parsed)
        if not 0 <= number < len(attachments):
            self._not_found()
            return
        part = attachments[number]
        content_type = part.get_content_type()
        if not _SAFE_CONTENT_TYPE.fullmatch(content_type):
            content_type = "application/octet-stream"
        self._send_bytes(_part_bytes(part), content_type, _disposition(_filename(part, number)))

    # -- responses -------------------------------------------------------------------

    def _not_found(self) -> None:
        self._send_html(HTTPStatus.NOT_FOUND, _page("Not found", "<p>No such message.</p>"))

    def _send_html(self, status: HTTPStatus, body: str) -> None:
        self._send(status, body.encode("utf-8"), "text/html; charset=utf-8", _PAGE_CSP)

    def _send_text(self, status: HTTPStatus, body: str) -> None:
        self._send(status, body.encode("utf-8"), "text/plain; charset=utf-8", _DOWNLOAD_CSP)

    def _send_json(self, payload: object) -> None:
        body = json.dumps(payload, indent=2).encode("utf-8")
        self._send(HTTPStatus.OK, body, "application/json", _DOWNLOAD_CSP)

    def _send_bytes(self, body: bytes, content_type: str, disposition: str) -> None:
        self._send(HTTPStatus.OK, body, content_type, _DOWNLOAD_CSP, disposition)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        csp: str,
        disposition: str | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", csp)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        if disposition is not None:
            self.send_header("Content-Disposition", disposition)
        self.end_headers()
        self.wfile.write(body)


# -- rendering -----------------------------------------------------------------------


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _subject(message: ReceivedMessage) -> str:
    try:
        return message.header("Subject") or ""
    except Exception:
        # A header the email package cannot decode must not take the listing down.
        return "(unreadable subject)"


def _sender(message: ReceivedMessage) -> str:
    return message.mail_from or "<>"


def _render_index(messages: list[ReceivedMessage]) -> str:
    rows = [
        "<tr>"
        f"<td>{_esc(_when(m.received_at))}</td>"
        f"<td>{_esc(_sender(m))}</td>"
        f"<td>{_esc(', '.join(m.rcpt_tos))}</td>"
        f"<td>{_esc(_subject(m)) or '<span class=muted>(no subject)</span>'}</td>"
        f'<td><a href="/messages/{m.index}">#{m.index}</a></td>'
        "</tr>"
        for m in reversed(messages)
    ]
    table = "<p class=muted>No messages yet.</p>"
    if rows:
        table = (
            "<table><thead><tr><th>Received</th><th>Envelope from</th><th>Recipients</th>"
            f"<th>Subject</th><th>Message</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    body = f"<h1>Postwire inbox</h1><p class=muted>{len(messages)} message(s)</p>{table}"
    return _page("Postwire inbox", body)


def _render_message(message: ReceivedMessage) -> str:
    parsed = message.parsed()
    envelope_rows = [
        ("Index", str(message.index)),
        ("Received", _when(message.received_at)),
        ("Envelope from", _sender(message)),
        ("Envelope to", ", ".join(message.rcpt_tos)),
        ("MAIL options", " ".join(message.mail_options)),
        ("Size", f"{len(message.data)} bytes"),
    ]
    sections = [
        f'<p><a href="/">&larr; inbox</a> · <a href="/messages/{message.index}.eml">download .eml</a></p>',
        f"<h1>{_esc(_subject(message)) or '(no subject)'}</h1>",
        "<h2>Envelope</h2>",
        _kv_table(envelope_rows),
        "<h2>Headers</h2>",
        _kv_table(list(_header_items(parsed))),
    ]

    plain = _body_part(parsed, "plain")
    html_part = _body_part(parsed, "html")
    if plain is not None:
        sections += ["<h2>Text</h2>", f"<pre>{_esc(_part_text(plain))}</pre>"]
    if html_part is not None:
        # Bare `sandbox` = no scripts, no same-origin, no forms, no popups; the escaped
        # srcdoc is decoded once by the HTML parser back into the original markup.
        sections += [
            "<h2>HTML</h2>",
            f'<iframe sandbox srcdoc="{_esc(_part_text(html_part))}" title="HTML body"></iframe>',
        ]
    if plain is None and html_part is None:
        sections.append("<p class=muted>No text/plain or text/html body.</p>")

    attachments = _attachments(parsed)
    if attachments:
        rows = "".join(
            "<tr>"
            f'<td><a href="/messages/{message.index}/attachments/{n}">'
            f"{_esc(_filename(part, n))}</a></td>"
            f"<td>{_esc(part.get_content_type())}</td>"
            f"<td>{len(_part_bytes(part))} bytes</td>"
            "</tr>"
            for n, part in enumerate(attachments)
        )
        sections += [
            "<h2>Attachments</h2>",
            "<table><thead><tr><th>File</th><th>Type</th><th>Size</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>",
        ]
    return _page(f"#{message.index} {_subject(message)}", "".join(sections))


def _kv_table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><td class=k>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f"<table><tbody>{cells}</tbody></table>"


def _header_items(message: Message) -> Iterator[tuple[str, str]]:
    for name, raw in message.raw_items():
        try:
            value = str(message.policy.header_fetch_parse(name, raw))
        except Exception:
            # Fall back to the undecoded text rather than losing the header.
            value = str(raw)
        yield name, value


def _api_listing(messages: list[ReceivedMessage]) -> list[dict[str, object]]:
    return [
        {
            "index": m.index,
            "mail_from": m.mail_from,
            "rcpt_tos": list(m.rcpt_tos),
            "subject": _subject(m),
            "received_at": m.received_at,
        }
        for m in messages
    ]


# -- MIME walking --------------------------------------------------------------------


def _body_part(message: EmailMessage, subtype: str) -> EmailMessage | None:
    try:
        part = message.get_body(preferencelist=(subtype,))
    except Exception:
        return None
    if part is None or part.get_content_type() != f"text/{subtype}":
        return None
    assert isinstance(part, EmailMessage)
    return part


def _leaves(part: EmailMessage) -> Iterator[EmailMessage]:
    # Unlike Message.walk(), an attached message/rfc822 stays one leaf (it is the
    # attachment) instead of being flattened into its own parts.
    if part.is_multipart() and part.get_content_maintype() == "multipart":
        for child in part.iter_parts():
            assert isinstance(child, EmailMessage)
            yield from _leaves(child)
    else:
        yield part


def _attachments(message: EmailMessage) -> list[EmailMessage]:
    candidates = (_body_part(message, "plain"), _body_part(message, "html"))
    bodies = {id(part) for part in candidates if part is not None}
    return [part for part in _leaves(message) if id(part) not in bodies]


def _part_bytes(part: Message) -> bytes:
    if part.get_content_maintype() == "message":
        payload = part.get_payload()
        if isinstance(payload, list) and payload:
            inner = payload[0]
            assert isinstance(inner, Message)
            return inner.as_bytes()
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _part_text(part: EmailMessage) -> str:
    # Wire CRLFs become plain newlines, as an HTML parser would normalise them anyway.
    return _decoded_text(part).replace("\r\n", "\n")


def _decoded_text(part: EmailMessage) -> str:
    try:
        content = part.get_content()
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError, ValueError):
        pass  # unknown or lying charset: fall through to a lossy decode
    charset = part.get_content_charset() or "utf-8"
    try:
        return _part_bytes(part).decode(charset, errors="replace")
    except LookupError:
        return _part_bytes(part).decode("utf-8", errors="replace")


def _filename(part: Message, number: int) -> str:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if name:
        # Keep only the last path component; a filename is display data, not a path.
        return re.split(r"[\\/]", name)[-1] or f"attachment-{number}"
    extension = mimetypes.guess_extension(part.get_content_type()) or ".bin"
    return f"attachment-{number}{extension}"


def _disposition(filename: str) -> str:
    # Header values built from message data must not smuggle CR/LF or quotes.
    ascii_name = re.sub(r"[^A-Za-z0-9._ -]", "_", filename).strip() or "download"
    encoded = urllib.parse.quote(filename, safe="")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{encoded}"

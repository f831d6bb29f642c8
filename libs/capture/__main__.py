"""Run the dev inbox: ``python -m libs.capture --smtp 127.0.0.1:1025 --http 127.0.0.1:8025``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from libs.capture.inbox_web import InboxWebServer
from libs.capture.smtp_sink import SmtpSink

__all__ = ["main", "parse_address"]


def parse_address(value: str) -> tuple[str, int]:
    """Parse ``host:port`` (``[v6]:port`` for IPv6) into a tuple."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "127.0.0.1", int(port)


def _format(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main(argv: list[str] | None = None) -> int:
    """Start the SMTP sink and the web inbox and run until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m libs.capture", description=__doc__)
    parser.add_argument("--smtp", type=parse_address, default=("127.0.0.1", 1025), metavar="HOST:PORT")
    parser.add_argument("--http", type=parse_address, default=("127.0.0.1", 8025), metavar="HOST:PORT")
    parser.add_argument("--store", type=Path, default=None, metavar="DIR", help="persist mail here")
    parser.add_argument(
        "--no-script", action="store_true", help="accept every recipient (ignore tempfail+… directives)"
    )
    parser.add_argument("--no-smtputf8", action="store_true", help="do not advertise SMTPUTF8")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every SMTP/HTTP exchange")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    smtp_host, smtp_port = args.smtp
    http_host, http_port = args.http
    sink = SmtpSink(
        smtp_host,
        smtp_port,
        store_dir=args.store,
        scripted=not args.no_script,
        smtputf8=not args.no_smtputf8,
    )
    web = InboxWebServer(sink, http_host, http_port)
    try:
        sink.start()
    except OSError as error:
        print(f"cannot listen for SMTP on {_format(smtp_host, smtp_port)}: {error}", file=sys.stderr)
        return 1
    try:
        try:
            web.start()
        except OSError as error:
            print(f"cannot listen for HTTP on {_format(http_host, http_port)}: {error}", file=sys.stderr)
            return 1
        try:
            print(f"SMTP sink listening on {_format(sink.host, sink.port)}", flush=True)
            print(f"Inbox at {web.url}", flush=True)
            if args.store is not None:
                print(f"Storing mail in {args.store} ({len(sink.messages())} loaded)", flush=True)
            stopping.wait()
        finally:
            web.stop()
    finally:
        sink.stop()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A private Postfix relay for the benchmark: its own main.cf/master.cf and queue under a temporary
directory, listening on a free loopback port and relaying everything to the bench's SMTP sink.

Postfix is the peer a platform team would otherwise deploy, so `make bench` measures it beside
Postwire on the same box, into the same sink. The bench never installs Postfix: without
/usr/sbin/postfix these cases are left out and the report says so. Rendering the configuration is
pure (unit-tested); starting and stopping need root, as `postfix start` does.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"
SMTP_SOURCE = "/usr/sbin/smtp-source"
DAEMON_DIRECTORY = "/usr/lib/postfix/sbin"
START_TIMEOUT_SECONDS = 30.0

# The master.cf services a relay needs. chroot is off everywhere: the queue lives in a temporary
# directory that has none of the files a chroot jail needs. Process limits stay Postfix's defaults.
_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def available() -> bool:
    """Postfix and smtp-source are installed (Debian's `postfix` package brings both)."""
    return Path(POSTFIX).is_file() and Path(SMTP_SOURCE).is_file() and Path(DAEMON_DIRECTORY).is_dir()


@dataclass(frozen=True, slots=True)
class RelayLayout:
    """Where one private instance keeps everything, and the two ports it connects."""

    root: Path
    listen_port: int
    sink_port: int

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def queue_dir(self) -> Path:
        return self.root / "queue"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postfix.log"


def main_cf(layout: RelayLayout) -> str:
    """A relay-only main.cf: loopback in, everything to the sink, no local delivery, no TLS."""
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": str(layout.queue_dir),
        "data_directory": str(layout.data_dir),
        "daemon_directory": DAEMON_DIRECTORY,
        # postfix-files (what `postfix check` verifies) comes with the package.
        "meta_directory": "/etc/postfix",
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "myhostname": "postfix-bench.localhost",
        "mydestination": "",
        "local_recipient_maps": "",
        "local_transport": "error:no local delivery in the bench relay",
        "alias_maps": "",
        "alias_database": "",
        "mynetworks": "127.0.0.0/8",
        "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
        "relayhost": f"[127.0.0.1]:{layout.sink_port}",
        "smtp_tls_security_level": "none",
        "smtpd_tls_security_level": "none",
        "biff": "no",
        "append_dot_mydomain": "no",
        # Postfix logs to syslog by default, and /dev/log may not exist; its own file is easier to read.
        "maillog_file": str(layout.log_file),
        "maillog_file_prefixes": str(layout.root),
        # The sink never defers; a queued retry would only mean the sink was down.
        "maximal_queue_lifetime": "1h",
    }
    return "".join(f"{key} = {value}\n" for key, value in settings.items())


def master_cf(layout: RelayLayout) -> str:
    """The SMTP listener on the free loopback port, plus the services a relay uses."""
    listener = f"127.0.0.1:{layout.listen_port} inet  n       -       n       -       -       smtpd\n"
    return listener + _SERVICES


class PostfixRelay:
    """One private Postfix instance; `start()` writes its configuration and starts it."""

    def __init__(self, layout: RelayLayout) -> None:
        self.layout = layout
        self.started = False

    def write_config(self) -> None:
        layout = self.layout
        for path in (layout.config_dir, layout.queue_dir, layout.data_dir):
            path.mkdir(parents=True, exist_ok=True)
        # Postfix's daemons run as mail_owner: they must reach into the (private) temporary root.
        layout.root.chmod(0o755)
        shutil.chown(layout.data_dir, "postfix", "postfix")
        (layout.config_dir / "main.cf").write_text(main_cf(layout))
        (layout.config_dir / "master.cf").write_text(master_cf(layout))

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", str(self.layout.config_dir), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def start(self) -> None:
        self.write_config()
        done = self.postfix("start")
        if done.returncode != 0:
            # Postfix reports to its log, not to stderr, when stderr is no terminal.
            logged = self.layout.log_file.read_text()[-2000:] if self.layout.log_file.exists() else ""
            raise RuntimeError(
                f"postfix start failed ({done.returncode}): {done.stderr}{done.stdout}{logged}"
            )
        self.started = True
        self.wait_listening()

    def wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.layout.listen_port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"postfix not listening on {self.layout.listen_port}") from None
                time.sleep(0.1)

    def master_pid(self) -> int | None:
        try:
            return int((self.layout.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self.started:
            self.postfix("stop")
            self.started = False


def smtp_source_command(
    port: int, *, messages: int, sessions: int, message_file: Path, sender: str, recipient: str
) -> list[str]:
    """`smtp-source` as in the anchor runs: a new connection per message, `sessions` in parallel,
    the message read from a file so Postfix relays exactly what Postwire is asked to send."""
    return [
        SMTP_SOURCE,
        "-s",
        str(sessions),
        "-m",
        str(messages),
        "-F",
        str(message_file),
        "-f",
        sender,
        "-t",
        recipient,
        "-N",  # a distinct recipient per message, as Postwire's cases use
        "-M",
        "bench-client.localhost",
        f"127.0.0.1:{port}",
    ]

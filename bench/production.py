"""The production shape of the benchmark's Postwire suite: a sending domain verified through a
loopback DNS server (so both DKIM signatures and per-recipient return paths are on), one webhook
subscribed to DELIVERED, metrics served, INFO logs and tracing at its default."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from postwire.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    domain_service_pb2,
    domain_service_pb2_grpc,
    event_pb2,
    webhook_service_pb2,
    webhook_service_pb2_grpc,
)

from libs.capture import SmtpSink
from libs.config import DEFAULT_REALTIME_WHEN
from libs.embedded.ports import free_port
from libs.embedded.suite import SERVICES, Suite, SuitePorts
from libs.priority import realtime_permitted
from libs.testing.dns_server import LoopbackDns
from libs.token_keys import generate_token_keys

SCOPES = ["send", "domains:read", "domains:write", "webhooks:read", "webhooks:write"]
WEBHOOK_PATH = "/bench-delivered"
# CPU priorities per BENCH_REALTIME (README "Overload"): "front-door" (the default, as README
# advises for one host) puts the edge at real-time priority from start-up and submission below it
# while the edge refuses calls (each service's default POSTWIRE_REALTIME_WHEN); "edge" is the edge
# alone; "front-door-always" keeps edge, submission and policy real-time throughout; "0" runs
# every service at normal priority (bench/README.md "A/B: the edge's CPU priority" measures them).
_ALWAYS = {"POSTWIRE_REALTIME_WHEN": "always"}
REALTIME_SHAPES: dict[str, dict[str, dict[str, str]]] = {
    "front-door": {
        "edge": {"POSTWIRE_REALTIME_PRIORITY": "10"},
        "submission": {"POSTWIRE_REALTIME_PRIORITY": "5"},
    },
    "edge": {"edge": {"POSTWIRE_REALTIME_PRIORITY": "10"}},
    "front-door-always": {
        "edge": {"POSTWIRE_REALTIME_PRIORITY": "10"},
        "submission": {"POSTWIRE_REALTIME_PRIORITY": "5", **_ALWAYS},
        "policy": {"POSTWIRE_REALTIME_PRIORITY": "5", **_ALWAYS},
    },
    "0": {},
}
# The overload case's sending client, above them all: the measuring instrument would be on a
# machine of its own, so its own waits for a core must not be in the latencies it measures.
CLIENT_REALTIME_PRIORITY = 20


def production_env(admin_token: str, dns: LoopbackDns) -> dict[str, str]:
    """Settings as a deployment would have them; only what loopback needs differs (the resolver,
    private webhook addresses). Tracing is left at its default: no exporter configured. The
    services refuse loopback webhooks outside POSTWIRE_ENV=dev, so dev it is; nothing else that
    setting allows is used (From is on a verified domain, not POSTWIRE_DEV_FROM_DOMAINS).
    The front door's CPU priorities are per service: `front_door_overrides`."""
    return {
        "POSTWIRE_ENV": "dev",
        "POSTWIRE_LOG_LEVEL": "INFO",
        "POSTWIRE_ADMIN_TOKEN": admin_token,
        "POSTWIRE_TOKEN_KEYS": generate_token_keys("bench"),
        "POSTWIRE_DNS_RESOLVER": dns.address,
        "POSTWIRE_DNS_TIMEOUT_SECONDS": "2",
        "POSTWIRE_WEBHOOK_ALLOW_PRIVATE": "127.0.0.0/8",
    }


def _shape_name() -> str:
    return os.environ.get("BENCH_REALTIME", "front-door")


def front_door_overrides() -> dict[str, dict[str, str]]:
    """POSTWIRE_REALTIME_PRIORITY per service (Suite.service_overrides) for the shape
    BENCH_REALTIME names, when the bench may grant it."""
    shape = REALTIME_SHAPES.get(_shape_name())
    if shape is None:
        raise SystemExit(f"BENCH_REALTIME: one of {', '.join(REALTIME_SHAPES)}")
    highest = max((int(env["POSTWIRE_REALTIME_PRIORITY"]) for env in shape.values()), default=0)
    if not shape or not realtime_permitted(highest):
        return {}
    return {name: dict(env) for name, env in shape.items()}


def priorities_text(overrides: Mapping[str, Mapping[str, str]]) -> str:
    """The services' CPU priorities in a run, for the report's header."""
    if overrides:
        given = ", ".join(
            f"{name} {env['POSTWIRE_REALTIME_PRIORITY']}"
            f" ({env.get('POSTWIRE_REALTIME_WHEN', DEFAULT_REALTIME_WHEN.get(name, 'shedding'))})"
            for name, env in overrides.items()
        )
        return f"real-time (SCHED_RR, POSTWIRE_REALTIME_PRIORITY, when): {given}; the others normal"
    if _shape_name() == "0":
        return "every service at normal priority (BENCH_REALTIME=0)"
    return "every service at normal priority (the bench may not grant a real-time one here)"


@dataclass(frozen=True, slots=True)
class Sender:
    """The tenant the bench sends as, and the verified address it sends from."""

    tenant_id: str
    api_key: str
    from_address: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)


async def make_sender(
    channel: grpc.aio.Channel, admin_token: str, dns: LoopbackDns, webhook_url: str
) -> Sender:
    """A tenant with a verified domain and a DELIVERED webhook, made through the public API."""
    admin = admin_service_pb2_grpc.AdminServiceStub(channel)
    auth = (("authorization", f"Bearer {admin_token}"),)
    made = await admin.CreateTenant(
        admin_service_pb2.CreateTenantRequest(
            tenant=admin_service_pb2.Tenant(name=f"bench-{uuid.uuid4().hex[:8]}")
        ),
        metadata=auth,
        timeout=10,
    )
    key = await admin.CreateApiKey(
        admin_service_pb2.CreateApiKeyRequest(tenant_id=made.tenant.id, scopes=SCOPES),
        metadata=auth,
        timeout=10,
    )
    sender = Sender(made.tenant.id, key.secret, "")
    name = f"bench-{uuid.uuid4().hex[:8]}.example.org"
    domains = domain_service_pb2_grpc.DomainServiceStub(channel)
    created = await domains.CreateDomain(
        domain_service_pb2.CreateDomainRequest(name=name), metadata=sender.metadata, timeout=10
    )
    publish(dns, {(r.type, r.name): r.value for r in created.domain.records if r.required})
    verified = await domains.VerifyDomain(
        domain_service_pb2.VerifyDomainRequest(name=name), metadata=sender.metadata, timeout=30
    )
    if verified.domain.state != domain_service_pb2.DOMAIN_STATE_VERIFIED:
        raise RuntimeError(f"bench domain {name} did not verify: {verified.domain}")
    webhooks = webhook_service_pb2_grpc.WebhookServiceStub(channel)
    await webhooks.CreateWebhook(
        webhook_service_pb2.CreateWebhookRequest(
            webhook=webhook_service_pb2.Webhook(url=webhook_url, event_types=[event_pb2.EVENT_TYPE_DELIVERED])
        ),
        metadata=sender.metadata,
        timeout=10,
    )
    return Sender(sender.tenant_id, sender.api_key, f"bench@{name}")


def publish(dns: LoopbackDns, records: Mapping[tuple[str, str], str]) -> None:
    for (kind, name), value in records.items():
        dns.set(kind, name, value)


def production_suite(
    data_dir: Path,
    sink: SmtpSink,
    env: Mapping[str, str],
    overrides: Mapping[str, Mapping[str, str]],
    internal_token: str,
) -> Suite:
    """The production-shaped Suite delivering to `sink`, with /metrics on every service; nothing is
    started yet. POSTWIRE_NATS_URL and POSTWIRE_DATABASE_URL point it at existing servers."""
    suite = Suite(
        data_dir=data_dir,
        ports=SuitePorts.free(),
        smarthost=f"127.0.0.1:{sink.port}",
        smarthost_tls="none",  # the capture sink offers no STARTTLS
        nats_url=os.environ.get("POSTWIRE_NATS_URL"),
        database_url=os.environ.get("POSTWIRE_DATABASE_URL"),
        extra_env={"POSTWIRE_INTERNAL_TOKEN": internal_token, **env},
        service_overrides={name: dict(settings) for name, settings in overrides.items()},
    )
    suite.metrics_ports = {name: free_port() for name in SERVICES}
    return suite

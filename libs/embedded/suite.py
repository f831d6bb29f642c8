"""Start the whole of Postwire as separate processes: what `make up`, the tests and the bench share."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from libs.db import apply_migrations
from libs.embedded.nats_server import start_nats
from libs.embedded.ports import free_port
from libs.embedded.postgres import start_postgres
from libs.embedded.process import ManagedProcess

__all__ = ["DEFAULT_METRICS_PORTS", "SERVICES", "Suite", "SuitePorts"]

# Start order: dependencies first; shutdown runs in reverse, so the edge stops taking calls first.
SERVICES = ("policy", "template", "events", "submission", "router", "mta_worker", "inbound", "edge")
# The gRPC port of each service (inbound's serves health and reflection only), and inbound's SMTP
# listener for bounces and complaints (POSTWIRE_INBOUND_LISTEN).
DEFAULT_PORTS = {
    "edge": 50051,
    "submission": 50061,
    "template": 50062,
    "policy": 50063,
    "router": 50064,
    "mta_worker": 50065,
    "events": 50066,
    "inbound": 50067,
    "inbound_smtp": 2526,
}
# /metrics of each service under `postwire up` (POSTWIRE_METRICS_LISTEN): 9464 is the OpenTelemetry
# Prometheus exporter's registered port, and each service takes the next one.
DEFAULT_METRICS_PORTS = {name: 9464 + i for i, name in enumerate(SERVICES)}


@dataclass
class SuitePorts:
    ports: dict[str, int]

    @classmethod
    def defaults(cls) -> SuitePorts:
        return cls(dict(DEFAULT_PORTS))

    @classmethod
    def free(cls) -> SuitePorts:
        return cls({name: free_port() for name in DEFAULT_PORTS})

    def addr(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"


@dataclass
class Suite:
    """Embedded NATS and PostgreSQL (unless URLs are given), migrations, and the services.

    `smarthost` (host:port) makes the suite hand every message to that relay
    (POSTWIRE_DELIVERY_MODE=smarthost); None makes it deliver by MX (POSTWIRE_DELIVERY_MODE=mx,
    no POSTWIRE_SMARTHOST). The mode is always set explicitly, so a suite never depends on the
    services' default. `smarthost_tls` is POSTWIRE_SMARTHOST_TLS: "none" for the capture inbox,
    which offers no TLS; None leaves the services' default.
    """

    data_dir: Path
    ports: SuitePorts
    smarthost: str | None
    smarthost_tls: str | None = None
    nats_url: str | None = None
    database_url: str | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # Service → settings for that service alone, over extra_env.
    service_overrides: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    nats_port: int = 0
    postgres_port: int = 0
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    # Service → port for POSTWIRE_METRICS_LISTEN; a service not named serves no /metrics.
    metrics_ports: Mapping[str, int] = field(default_factory=dict)
    # "nats"/"postgres" → pid of the embedded server this suite started (none when external),
    # for the benchmark's CPU accounting.
    infra_pids: dict[str, int] = field(default_factory=dict)
    _infra: list[ManagedProcess] = field(default_factory=list)

    def start_infrastructure(self) -> None:
        if not self.nats_url:
            proc, self.nats_url = start_nats(self.data_dir / "nats", port=self.nats_port)
            self._infra.append(proc)
            self.infra_pids["nats"] = proc.pid
        if not self.database_url:
            proc, self.database_url = start_postgres(self.data_dir / "postgres", port=self.postgres_port)
            self._infra.append(proc)
            self.infra_pids["postgres"] = proc.pid
        asyncio.run(apply_migrations(self.database_url))

    def service_env(self, service: str) -> dict[str, str]:
        assert self.nats_url and self.database_url
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSTWIRE_")}
        env.update(
            {
                "POSTWIRE_NATS_URL": self.nats_url,
                "POSTWIRE_DATABASE_URL": self.database_url,
                "POSTWIRE_LISTEN": self.ports.addr(service),
                "POSTWIRE_POLICY_ADDR": self.ports.addr("policy"),
                "POSTWIRE_TEMPLATE_ADDR": self.ports.addr("template"),
                "POSTWIRE_SUBMISSION_ADDR": self.ports.addr("submission"),
                "POSTWIRE_EVENTS_ADDR": self.ports.addr("events"),
                "POSTWIRE_INBOUND_LISTEN": self.ports.addr("inbound_smtp"),
                "OTEL_SERVICE_NAME": f"postwire-{service}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.delivery_env())
        if service in self.metrics_ports:
            env["POSTWIRE_METRICS_LISTEN"] = f"127.0.0.1:{self.metrics_ports[service]}"
        env.update(self.extra_env)
        env.update(self.service_overrides.get(service, {}))
        return env

    def delivery_env(self) -> dict[str, str]:
        """The delivery settings every service gets (extra_env may still override them)."""
        if self.smarthost is None:
            return {"POSTWIRE_DELIVERY_MODE": "mx"}
        env = {"POSTWIRE_DELIVERY_MODE": "smarthost", "POSTWIRE_SMARTHOST": self.smarthost}
        if self.smarthost_tls is not None:
            env["POSTWIRE_SMARTHOST_TLS"] = self.smarthost_tls
        return env

    def start_services(self, names: tuple[str, ...] = SERVICES) -> None:
        for name in names:
            self.start_service(name, wait=False)
        for name in names:
            self.processes[name].wait_ready(r"serving on", timeout=60)

    def start_service(self, name: str, *, wait: bool = True) -> ManagedProcess:
        proc = ManagedProcess(
            name,
            [sys.executable, "-m", f"services.{name}"],
            env=self.service_env(name),
            log_path=self.data_dir / "logs" / f"{name}.log",
        )
        proc.spawn()
        self.processes[name] = proc
        if wait:
            proc.wait_ready(r"serving on", timeout=60)
        return proc

    def stop_services(self) -> dict[str, int | None]:
        codes = {}
        for name in reversed(list(self.processes)):
            codes[name] = self.processes[name].stop(timeout=30)
        return codes

    def stop(self) -> None:
        self.stop_services()
        for proc in reversed(self._infra):
            proc.stop(timeout=30)

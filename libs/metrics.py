"""Every metric Postwire exports, defined once, and the Prometheus endpoint that serves them.

`METRICS` is the single source of names, units, attributes and meanings: the instruments below
are built from it, the README's "Metrics" table is checked against it, and so are the alert rules
and the dashboard in deploy/k8s/components/monitoring (tests/unit/test_metrics_table.py).

Instruments are made on the global meter at import. Until `setup_metrics` installs a provider
(POSTWIRE_METRICS_LISTEN set) they are the API's no-ops, so tests and tools pay nothing.
Names follow the OpenTelemetry semantic conventions where one exists (`rpc.server.duration`,
`rpc.client.duration` and their `rpc.*` attributes); the rest are `postwire.*`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.sdk.metrics import MeterProvider

__all__ = [
    "METRICS",
    "MetricSpec",
    "QueueReadings",
    "prometheus_name",
    "reported_by",
    "setup_metrics",
    "shutdown_metrics",
]

_log = logging.getLogger(__name__)

Kind = Literal["counter", "histogram", "gauge"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: Kind
    unit: str
    attributes: tuple[str, ...]
    description: str
    # Which service(s) report it, for the README table.
    source: str


RPC_ATTRS = ("rpc.system", "rpc.service", "rpc.method", "rpc.grpc.status_code")

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "rpc.server.duration",
        "histogram",
        "ms",
        RPC_ATTRS,
        "Duration of gRPC calls this service answered, by method and status code (count = calls).",
        "every service",
    ),
    MetricSpec(
        "rpc.client.duration",
        "histogram",
        "ms",
        RPC_ATTRS,
        "Duration of gRPC calls this service made to another Postwire service, by method and status code.",
        "every caller",
    ),
    MetricSpec(
        "postwire.messages.accepted",
        "counter",
        "{recipient}",
        (),
        "Recipients accepted for delivery (one per recipient of an accepted SendEmail).",
        "events",
    ),
    MetricSpec(
        "postwire.messages.delivered",
        "counter",
        "{recipient}",
        (),
        "Recipients whose mail a server accepted (250 after the final dot).",
        "events",
    ),
    MetricSpec(
        "postwire.messages.deferred",
        "counter",
        "{recipient}",
        ("postwire.bounce.category",),
        "Delivery attempts that will be retried, by bounce category.",
        "events",
    ),
    MetricSpec(
        "postwire.messages.bounced",
        "counter",
        "{recipient}",
        ("postwire.bounce.category",),
        "Recipients refused for good (5xx or an asynchronous bounce), by bounce category.",
        "events",
    ),
    MetricSpec(
        "postwire.messages.failed",
        "counter",
        "{recipient}",
        (),
        "Recipients given up because of a failure on our side (e.g. a render that keeps failing).",
        "events",
    ),
    MetricSpec(
        "postwire.messages.expired",
        "counter",
        "{recipient}",
        (),
        "Recipients given up because retries ran past the give-up time.",
        "events",
    ),
    MetricSpec(
        "postwire.smtp.attempt.duration",
        "histogram",
        "ms",
        ("postwire.smtp.phase", "postwire.smtp.outcome"),
        "Duration of outbound SMTP work: phase `session` (connect, greeting, EHLO, STARTTLS, AUTH) "
        "with outcome `ok`/`failed`, phase `transaction` (MAIL to the reply after the dot) with "
        "outcome `delivered`/`deferred`/`bounced`/`broken`.",
        "mta_worker",
    ),
    MetricSpec(
        "postwire.webhook.deliveries",
        "counter",
        "{request}",
        ("postwire.webhook.outcome",),
        "Webhook POSTs, by outcome `delivered` (2xx) or `failed` (anything else; retried).",
        "events",
    ),
    MetricSpec(
        "postwire.webhook.endpoints.disabled",
        "counter",
        "{endpoint}",
        (),
        "Webhook endpoints disabled after failing for too long.",
        "events",
    ),
    MetricSpec(
        "postwire.jetstream.consumer.pending",
        "gauge",
        "{message}",
        ("messaging.destination.name", "messaging.consumer.group.name"),
        "Messages in the stream not yet delivered to the durable consumer (lag). Reported by one "
        "mta_worker replica (the holder of a PostgreSQL advisory lock), so never sum across pods.",
        "mta_worker (leader)",
    ),
    MetricSpec(
        "postwire.jetstream.consumer.ack_pending",
        "gauge",
        "{message}",
        ("messaging.destination.name", "messaging.consumer.group.name"),
        "Messages delivered to the consumer and not yet acknowledged (in flight). One reporter, as above.",
        "mta_worker (leader)",
    ),
    MetricSpec(
        "postwire.queue.oldest.age",
        "gauge",
        "s",
        ("postwire.queue",),
        "How long the oldest due work item has waited past its due time: queue `route` (accepted "
        "messages) and `deliver` (queued or deferred recipients). 0 when nothing is overdue. One reporter.",
        "mta_worker (leader)",
    ),
    MetricSpec(
        "postwire.sweeper.republished",
        "counter",
        "{message}",
        ("postwire.sweeper",),
        "Work re-published by a sweeper because its next step had not happened in time "
        "(lost publish, crashed consumer, due retries).",
        "router, mta_worker, events",
    ),
    MetricSpec(
        "postwire.stage.failures",
        "counter",
        "{failure}",
        ("postwire.stage", "postwire.failure.kind"),
        "Bus handler failures by stage, kind `dependency` (PostgreSQL, NATS or a peer away; retried "
        "without counting) or `error` (a bug or bad data; counted toward giving up).",
        "router, mta_worker, events",
    ),
    MetricSpec(
        "postwire.template.render.kills",
        "counter",
        "{process}",
        ("postwire.render.kill.reason",),
        "Render worker processes lost: reason `time_limit` (killed at the render time limit) or "
        "`exited` (out of memory or crashed).",
        "template",
    ),
)

_BY_NAME = {spec.name: spec for spec in METRICS}


def prometheus_name(spec: MetricSpec) -> str:
    """The metric family name as scraped (what opentelemetry-exporter-prometheus makes of it):
    dots become underscores, a unit other than a {annotation} is appended, counters end in _total."""
    name = spec.name.replace(".", "_")
    suffix = {"ms": "milliseconds", "s": "seconds"}.get(spec.unit, "")
    if suffix:
        name += "_" + suffix
    if spec.kind == "counter":
        name += "_total"
    return name


_meter = metrics.get_meter("postwire")


_COUNTERS: dict[str, metrics.Counter] = {}


def _counter(name: str) -> metrics.Counter:
    spec = _BY_NAME[name]
    counter = _meter.create_counter(spec.name, unit=spec.unit, description=spec.description)
    _COUNTERS[name] = counter
    return counter


def reported_by(spec: MetricSpec, service: str) -> bool:
    return service in spec.source.replace(" (leader)", "").split(", ") or spec.source.startswith("every")


def _histogram(name: str) -> metrics.Histogram:
    spec = _BY_NAME[name]
    return _meter.create_histogram(spec.name, unit=spec.unit, description=spec.description)


rpc_server_duration = _histogram("rpc.server.duration")
rpc_client_duration = _histogram("rpc.client.duration")
messages_accepted = _counter("postwire.messages.accepted")
messages_delivered = _counter("postwire.messages.delivered")
messages_deferred = _counter("postwire.messages.deferred")
messages_bounced = _counter("postwire.messages.bounced")
messages_failed = _counter("postwire.messages.failed")
messages_expired = _counter("postwire.messages.expired")
smtp_attempt_duration = _histogram("postwire.smtp.attempt.duration")
webhook_deliveries = _counter("postwire.webhook.deliveries")
webhook_endpoints_disabled = _counter("postwire.webhook.endpoints.disabled")
sweeper_republished = _counter("postwire.sweeper.republished")
stage_failures = _counter("postwire.stage.failures")
render_kills = _counter("postwire.template.render.kills")


class QueueReadings:
    """The latest queue readings, written by the event loop and read by the scrape thread.

    Observable callbacks run in the exporter's HTTP thread, so they must not touch asyncpg or NATS:
    a task refreshes these values, and a replica that is not the reporter clears them (no series).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], int] = {}
        self._ack_pending: dict[tuple[str, str], int] = {}
        self._oldest: dict[str, float] = {}

    def update(
        self,
        *,
        pending: Mapping[tuple[str, str], int],
        ack_pending: Mapping[tuple[str, str], int],
        oldest: Mapping[str, float],
    ) -> None:
        with self._lock:
            self._pending = dict(pending)
            self._ack_pending = dict(ack_pending)
            self._oldest = dict(oldest)

    def clear(self) -> None:
        self.update(pending={}, ack_pending={}, oldest={})

    def _consumers(self, values: dict[tuple[str, str], int]) -> Iterable[Observation]:
        with self._lock:
            items = list(values.items())
        for (stream, consumer), value in items:
            yield Observation(
                value, {"messaging.destination.name": stream, "messaging.consumer.group.name": consumer}
            )

    def observe_pending(self, _: CallbackOptions) -> Iterable[Observation]:
        return list(self._consumers(self._pending))

    def observe_ack_pending(self, _: CallbackOptions) -> Iterable[Observation]:
        return list(self._consumers(self._ack_pending))

    def observe_oldest(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            return [Observation(age, {"postwire.queue": queue}) for queue, age in self._oldest.items()]


queue_readings = QueueReadings()


def _gauge(name: str, callback: metrics.CallbackT) -> None:
    spec = _BY_NAME[name]
    _meter.create_observable_gauge(spec.name, [callback], unit=spec.unit, description=spec.description)


_gauge("postwire.jetstream.consumer.pending", queue_readings.observe_pending)
_gauge("postwire.jetstream.consumer.ack_pending", queue_readings.observe_ack_pending)
_gauge("postwire.queue.oldest.age", queue_readings.observe_oldest)


_server: WSGIServer | None = None
_provider: MeterProvider | None = None


def setup_metrics(service_name: str, listen: tuple[str, int] | None) -> int | None:
    """Serve /metrics on `listen` (POSTWIRE_METRICS_LISTEN); None leaves every instrument a no-op.

    Returns the bound port. prometheus_client's server runs in a daemon thread: a scrape never waits on a busy event loop,
    and the event loop never waits on a slow scraper.
    """
    global _server, _provider
    if listen is None:
        return None
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from prometheus_client import REGISTRY, start_http_server

    reader = PrometheusMetricReader()
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": f"postwire-{service_name}"})
    )
    metrics.set_meter_provider(provider)
    server, _thread = start_http_server(listen[1], addr=listen[0], registry=REGISTRY)
    _server, _provider = server, provider
    # A counter without attributes is exported at 0 from the start by the service that owns it,
    # so rate() and the alert rules see 0 rather than no series.
    for spec in METRICS:
        if spec.kind == "counter" and not spec.attributes and reported_by(spec, service_name):
            _COUNTERS[spec.name].add(0)
    port: int = server.server_address[1]
    _log.info("metrics on http://%s:%d/metrics", listen[0], port)
    return port


def shutdown_metrics() -> None:
    if _server is not None:
        _server.shutdown()
    if _provider is not None:
        _provider.shutdown()

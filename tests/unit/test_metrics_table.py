"""libs/metrics.py is the one list of metrics: the README table, the alert rules and the dashboard
name nothing else, and the scraped names are the ones the table gives."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from libs.metrics import METRICS, MetricSpec, prometheus_name

ROOT = Path(__file__).parents[2]
MONITORING = ROOT / "deploy" / "k8s" / "components" / "monitoring"
HISTOGRAM_SERIES = ("_bucket", "_count", "_sum")


def scraped_names() -> dict[str, MetricSpec]:
    """Every series name a scrape can show, to the spec it belongs to."""
    names: dict[str, MetricSpec] = {}
    for spec in METRICS:
        family = prometheus_name(spec)
        suffixes = HISTOGRAM_SERIES if spec.kind == "histogram" else ("",)
        for suffix in suffixes:
            names[family + suffix] = spec
    return names


def metric_names_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression: label matchers, grouping clauses, templates and strings
    removed first, so label names (postwire_queue, rpc_method) are not taken for metrics."""
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r'"[^"]*"', " ", expr)
    return set(re.findall(r"\b((?:postwire|rpc)_[a-z0-9_]+)\b", expr))


def rule_expressions() -> list[str]:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    return [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_every_metric_the_rules_and_dashboard_name_is_defined() -> None:
    known = scraped_names()
    for expr in rule_expressions() + dashboard_expressions():
        names = metric_names_in(expr)
        assert names, f"no metric found in {expr!r}"
        assert names <= known.keys(), f"{sorted(names - known.keys())} in {expr!r} is not in libs/metrics.py"


def test_the_alerts_cover_what_the_issue_asks_for() -> None:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    alerts = {r["alert"]: r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]}
    used = {name: metric_names_in(expr) for name, expr in alerts.items()}
    assert "postwire_jetstream_consumer_pending" in used["PostwireConsumerLagGrowing"]
    assert "postwire_queue_oldest_age_seconds" in used["PostwireOldestQueuedMessageOld"]
    assert "postwire_messages_delivered_total" in used["PostwireDeliveryFailureRatioHigh"]
    assert "postwire_stage_failures_total" in used["PostwireDependencyUnavailable"]
    assert "postwire_webhook_endpoints_disabled_total" in used["PostwireWebhookEndpointsDisabled"]


def readme_rows() -> dict[str, list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Metrics", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    return rows


def test_the_readme_table_lists_every_metric_as_defined() -> None:
    rows = readme_rows()
    assert set(rows) == {spec.name for spec in METRICS}
    for spec in METRICS:
        _, prom, kind, unit, attributes, _, _ = rows[spec.name]
        assert prom == f"`{prometheus_name(spec)}`"
        assert kind == spec.kind
        assert unit == f"`{spec.unit}`"
        assert set(re.findall(r"`([^`]+)`", attributes)) == set(spec.attributes)


def test_the_exporter_scrapes_the_names_the_table_gives() -> None:
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    meter = provider.get_meter("test")
    for spec in METRICS:
        attributes = {a: "x" for a in spec.attributes}
        if spec.kind == "counter":
            meter.create_counter(spec.name, unit=spec.unit).add(1, attributes)
        elif spec.kind == "histogram":
            meter.create_histogram(spec.name, unit=spec.unit).record(1.0, attributes)
        else:

            def observe(_: CallbackOptions, attributes: dict[str, str] = attributes) -> list[Observation]:
                return [Observation(1, attributes)]

            meter.create_observable_gauge(spec.name, [observe], unit=spec.unit)
    text = generate_latest(registry).decode()
    provider.shutdown()
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    for spec in METRICS:
        # The parser drops _total from a counter family's name.
        name = prometheus_name(spec).removesuffix("_total")
        assert families.get(name) == spec.kind, (spec.name, name, sorted(families))


def test_the_component_wires_its_files_and_scrapes_the_metrics_port() -> None:
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    for name in kustomization["resources"]:
        assert (MONITORING / name).is_file()
    (generator,) = kustomization["configMapGenerator"]
    assert generator["options"]["labels"]["grafana_dashboard"] == "1"
    monitor = yaml.safe_load((MONITORING / "servicemonitor.yaml").read_text())
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]

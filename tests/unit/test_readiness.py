"""Readiness and liveness cores, the log level check and the JSON log line's correlation fields."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2
from opentelemetry.sdk.trace import TracerProvider

from libs.config import CommonConfig, ConfigError, env_log_level
from libs.db import MIGRATIONS
from libs.grpcx.server import _Health
from libs.readiness import Heartbeat, ReadinessProbe, needed_schema_version, schema_version
from libs.runtime import _JsonFormatter, log_fields


def test_schema_version_is_the_highest_migration_number() -> None:
    assert schema_version(["0002_b.sql", "0010_c.sql", "0009_a.sql", "notes.txt"]) == 10
    assert schema_version([]) == 0


def test_the_build_needs_its_newest_shipped_migration(tmp_path: Path) -> None:
    for name in ("0001_a.sql", "0003_c.sql", "README.md"):
        (tmp_path / name).write_text("")
    assert needed_schema_version(tmp_path) == 3
    newest = max(p.name for p in MIGRATIONS.glob("*.sql"))
    assert needed_schema_version() == int(newest.split("_")[0])


@pytest.mark.parametrize("raw", ["debug", "INFO", " warning ", "Error", "critical", ""])
def test_log_levels_accepted(raw: str) -> None:
    assert env_log_level({"POSTWIRE_LOG_LEVEL": raw}) in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


@pytest.mark.parametrize("raw", ["verbose", "10", "warn ing", "trace"])
def test_a_bad_log_level_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"POSTWIRE_LOG_LEVEL: expected one of debug, info"):
        CommonConfig.from_env({"POSTWIRE_LOG_LEVEL": raw}, service="policy", default_port=1)


def _last_line(stream: io.StringIO) -> dict[str, object]:
    return json.loads(stream.getvalue().strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture
def json_log() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_JsonFormatter("router"))
    logger = logging.getLogger("test-json-log")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, stream


def test_every_line_names_the_service_and_carries_ids_only_inside_a_span(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    logger.info("outside")
    outside = _last_line(stream)
    assert outside["service"] == "router"
    assert "trace_id" not in outside and "span_id" not in outside

    with TracerProvider().get_tracer("t").start_as_current_span("work") as span:
        logger.info("inside")
        context = span.get_span_context()
    inside = _last_line(stream)
    assert inside["service"] == "router"
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"


def test_fields_become_keys_but_cannot_replace_the_line_s_own(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    logger.info("message accepted", extra=log_fields(message_id="m1", recipients=2, service="spoofed"))
    line = _last_line(stream)
    assert line["message_id"] == "m1" and line["recipients"] == 2
    assert line["service"] == "router" and line["message"] == "message accepted"


def test_heartbeat_is_alive_until_it_has_not_run_for_the_stall_time() -> None:
    now = [100.0]
    beat = Heartbeat(stall=10.0, clock=lambda: now[0])
    now[0] = 110.0
    assert beat.alive()
    now[0] = 110.5
    assert not beat.alive()
    beat.beat()
    assert beat.alive()


async def test_liveness_answers_not_serving_when_the_loop_stalled_and_readiness_is_untouched() -> None:
    alive = [True]
    servicer = _Health(lambda: alive[0])
    await servicer.set("readiness", health_pb2.HealthCheckResponse.SERVING)

    async def check(name: str) -> int:
        answer = await servicer.Check(health_pb2.HealthCheckRequest(service=name), None)
        return answer.status

    assert await check("") == health_pb2.HealthCheckResponse.SERVING
    alive[0] = False
    assert await check("") == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await check("readiness") == health_pb2.HealthCheckResponse.SERVING


async def test_readiness_probe_publishes_every_verdict_and_recovers() -> None:
    reasons: list[str | None] = ["database: ConnectionRefusedError"]
    published: list[bool] = []

    async def database() -> str | None:
        return reasons[0]

    async def nats() -> str | None:
        return None

    async def publish(ready: bool) -> None:
        published.append(ready)

    probe = ReadinessProbe([database, nats], publish)
    assert await probe.check_once() is False
    reasons[0] = None
    assert await probe.check_once() is True
    assert published == [False, True]

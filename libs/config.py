"""Typed reading of POSTWIRE_* settings from an environment mapping.

Every service builds one frozen config from `os.environ` at start-up (tests pass a dict), and
a bad value fails fast with the variable's name in the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from libs.stage_retry import StageRetry

__all__ = [
    "CommonConfig",
    "ConfigError",
    "env_float",
    "env_host_port",
    "env_int",
    "env_log_level",
    "env_str",
]

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_DATABASE_URL = "postgresql://postwire@127.0.0.1:5432/postwire"


class ConfigError(ValueError):
    """A POSTWIRE_* variable is malformed; the message names it."""


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(env, name, default).lower()
    if value not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
    return value


def env_host_port(env: Mapping[str, str], name: str, default: str) -> tuple[str, int]:
    raw = env_str(env, name, default)
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}: expected host:port, got {raw!r}")
    return host.strip("[]"), int(port)


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def env_log_level(env: Mapping[str, str]) -> str:
    """POSTWIRE_LOG_LEVEL, checked here: a typo would otherwise surface as a traceback from
    logging, or silently as the wrong amount of logs."""
    raw = env_str(env, "POSTWIRE_LOG_LEVEL", "info")
    level = raw.upper()
    if level not in _LOG_LEVELS:
        raise ConfigError(
            f"POSTWIRE_LOG_LEVEL: expected one of {', '.join(_LOG_LEVELS).lower()}, got {raw!r}"
        )
    return level


# POSTWIRE_NICE's default per service: the pipeline's workers yield the CPU to the services a
# caller is waiting on (libs.priority). Template and inbound stay at 0: SendEmail renders at
# acceptance, and inbound answers SMTP clients.
DEFAULT_NICE: Mapping[str, int] = {"router": 10, "mta_worker": 10, "events": 10}

# POSTWIRE_REALTIME_WHEN's choices, and its default per service ("shedding" elsewhere): the edge
# must already have a core when the first excess call arrives (its first refusals come late
# otherwise: bench/README.md "A/B: the edge's CPU priority"); the services behind it need one only
# while it refuses (libs.shedding).
REALTIME_WHEN = ("shedding", "always")
DEFAULT_REALTIME_WHEN: Mapping[str, str] = {"edge": "always"}

MAX_REALTIME_PRIORITY = 99  # SCHED_RR's range on Linux

# POSTWIRE_MAX_IN_FLIGHT's default per service. The edge sheds first and cheaply: calls it lets
# through beyond what a back end admits wait in that back end's gRPC queue, out of its limiter's
# sight, and are refused only after seconds (measured, bench/README.md "A/B: overload"); so the
# edge allows what submission does. Policy answers every SendEmail's admission call and several
# other services' lookups.
DEFAULT_MAX_IN_FLIGHT: Mapping[str, int] = {
    "edge": 64,
    "submission": 64,
    "policy": 128,
    "template": 64,
    "events": 64,
}


@dataclass(frozen=True, slots=True)
class CommonConfig:
    """Settings every service shares."""

    service: str
    listen: str
    nats_url: str
    database_url: str
    shutdown_grace_seconds: float
    drain_seconds: float
    log_level: str
    # Sweepers wake this often, and re-publish work whose next step has not happened after
    # stall_seconds (a lost publish, a crashed consumer, a wiped JetStream store).
    sweep_interval_seconds: float
    stall_seconds: float
    # How long an API key's answer (and a tenant's limits) may be served from memory: the bound on
    # how late a revocation or a limit change takes effect on a replica.
    key_cache_seconds: float = 5.0
    # The bearer token every postwire.internal.v1 call carries (libs.grpcx.internal_auth); empty
    # refuses every internal call, and outside POSTWIRE_ENV=dev stops the services that use it.
    internal_token: str = ""
    # Bounded retries of a pipeline stage's failures (libs.stage_retry): outages wait, bugs count.
    stage_retry: StageRetry = field(default_factory=StageRetry)
    # The gRPC server closes every client connection after this long (plus the grace for calls
    # in flight), so a scale-out gets traffic; long streams are cut then and resume by cursor.
    max_connection_age_seconds: float = 300.0
    max_connection_age_grace_seconds: float = 30.0
    # The asyncpg pool's bounds (libs.db.connect_pool). Every replica opens up to the maximum, so
    # replicas x max over all services is what PostgreSQL must accept (deploy/k8s/README.md).
    db_pool_min_size: int = 2
    db_pool_max_size: int = 10
    # Prepared statements each pooled connection keeps (asyncpg's LRU, default 100), so a hot
    # statement is parsed and planned once per connection; 0 for PgBouncer in transaction mode,
    # where a statement prepared on one server connection is not there on the next.
    db_statement_cache_size: int = 100
    # POSTWIRE_DB_ACQUIRE_TIMEOUT_SECONDS: a call that cannot get a pooled connection this fast is
    # answered UNAVAILABLE with RetryInfo ("database busy") instead of queueing without bound.
    db_acquire_timeout_seconds: float = 5.0
    # POSTWIRE_METRICS_LISTEN: where /metrics is served (libs.metrics); None (unset) serves none.
    metrics_listen: tuple[str, int] | None = None
    # POSTWIRE_MAX_IN_FLIGHT: calls the gRPC server runs at once; a call that cannot start within
    # POSTWIRE_MAX_IN_FLIGHT_WAIT_MS is refused with RESOURCE_EXHAUSTED (libs.grpcx.overload).
    max_in_flight: int = 64
    max_in_flight_wait_seconds: float = 0.01
    # POSTWIRE_NICE: the service's CPU priority as a nice value, 0-19 (libs.priority).
    nice: int = 0
    # POSTWIRE_REALTIME_PRIORITY: 0 (off) or 1-99, every thread under SCHED_RR at that priority
    # (libs.priority.run_realtime); needs CAP_SYS_NICE, and the service refuses to start without it.
    realtime_priority: int = 0
    # POSTWIRE_REALTIME_WHEN: "shedding" (only while the platform refuses calls, libs.shedding)
    # or "always" (from start-up); the default per service is DEFAULT_REALTIME_WHEN.
    realtime_when: str = "shedding"

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        service: str,
        default_port: int,
        default_pool_max_size: int = 10,
    ) -> CommonConfig:
        listen = env_str(env, "POSTWIRE_LISTEN", f"127.0.0.1:{default_port}")
        env_host_port({"POSTWIRE_LISTEN": listen}, "POSTWIRE_LISTEN", listen)
        pool_min, pool_max = _pool_sizes(env, default_pool_max_size)
        return cls(
            service=service,
            listen=listen,
            nats_url=env_str(env, "POSTWIRE_NATS_URL", DEFAULT_NATS_URL),
            database_url=env_str(env, "POSTWIRE_DATABASE_URL", DEFAULT_DATABASE_URL),
            shutdown_grace_seconds=env_float(env, "POSTWIRE_SHUTDOWN_GRACE_SECONDS", 10.0),
            drain_seconds=env_float(env, "POSTWIRE_DRAIN_SECONDS", 0.0),
            log_level=env_log_level(env),
            sweep_interval_seconds=env_float(env, "POSTWIRE_SWEEP_INTERVAL_SECONDS", 5.0, minimum=0.05),
            stall_seconds=env_float(env, "POSTWIRE_STALL_SECONDS", 30.0, minimum=0.1),
            key_cache_seconds=env_float(env, "POSTWIRE_KEY_CACHE_SECONDS", 5.0),
            internal_token=env_str(env, "POSTWIRE_INTERNAL_TOKEN", ""),
            stage_retry=StageRetry(
                max_attempts=env_int(env, "POSTWIRE_STAGE_MAX_ATTEMPTS", 5, minimum=1),
                base_seconds=env_float(env, "POSTWIRE_STAGE_RETRY_BASE_SECONDS", 2.0, minimum=0.01),
                max_seconds=env_float(env, "POSTWIRE_STAGE_RETRY_MAX_SECONDS", 300.0, minimum=0.01),
                give_up_after=timedelta(
                    seconds=env_float(env, "POSTWIRE_RETRY_GIVE_UP_SECONDS", 5 * 86400.0)
                ),
            ),
            max_connection_age_seconds=env_float(
                env, "POSTWIRE_GRPC_MAX_CONNECTION_AGE_SECONDS", 300.0, minimum=1.0
            ),
            max_connection_age_grace_seconds=env_float(
                env, "POSTWIRE_GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS", 30.0, minimum=0.0
            ),
            db_pool_min_size=pool_min,
            db_pool_max_size=pool_max,
            db_statement_cache_size=env_int(env, "POSTWIRE_DB_STATEMENT_CACHE_SIZE", 100, minimum=0),
            db_acquire_timeout_seconds=env_float(
                env, "POSTWIRE_DB_ACQUIRE_TIMEOUT_SECONDS", 5.0, minimum=0.001
            ),
            metrics_listen=(
                env_host_port(env, "POSTWIRE_METRICS_LISTEN", "")
                if env.get("POSTWIRE_METRICS_LISTEN", "").strip()
                else None
            ),
            max_in_flight=env_int(
                env, "POSTWIRE_MAX_IN_FLIGHT", DEFAULT_MAX_IN_FLIGHT.get(service, 64), minimum=1
            ),
            max_in_flight_wait_seconds=env_float(env, "POSTWIRE_MAX_IN_FLIGHT_WAIT_MS", 10.0) / 1000.0,
            nice=env_int(env, "POSTWIRE_NICE", DEFAULT_NICE.get(service, 0)),
            realtime_priority=_realtime_priority(env),
            realtime_when=env_choice(
                env, "POSTWIRE_REALTIME_WHEN", DEFAULT_REALTIME_WHEN.get(service, "shedding"), REALTIME_WHEN
            ),
        )


def _realtime_priority(env: Mapping[str, str]) -> int:
    name = "POSTWIRE_REALTIME_PRIORITY"
    value = env_int(env, name, 0)
    if value > MAX_REALTIME_PRIORITY:
        raise ConfigError(f"{name}: must be 0 (off) or 1-{MAX_REALTIME_PRIORITY}, got {value}")
    return value


def _pool_sizes(env: Mapping[str, str], default_max: int) -> tuple[int, int]:
    """POSTWIRE_DB_POOL_MIN_SIZE (2) and POSTWIRE_DB_POOL_MAX_SIZE (per service; 10 unless the
    service needs more); asyncpg refuses min > max only when the pool opens, so check here."""
    high = env_int(env, "POSTWIRE_DB_POOL_MAX_SIZE", default_max, minimum=1)
    low = env_int(env, "POSTWIRE_DB_POOL_MIN_SIZE", min(2, high), minimum=0)
    if low > high:
        raise ConfigError(
            f"POSTWIRE_DB_POOL_MIN_SIZE ({low}) must not exceed POSTWIRE_DB_POOL_MAX_SIZE ({high})"
        )
    return low, high

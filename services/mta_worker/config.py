from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from libs.config import CommonConfig, env_float, env_host_port, env_int, env_str
from services.mta_worker.retry_schedule import RetryPolicy


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    common: CommonConfig
    smarthost: tuple[str, int]
    smtp_timeout: float
    hostname: str
    retry: RetryPolicy
    ack_wait: float
    concurrency: int
    retry_concurrency: int
    slots_per_destination: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerConfig:
        return cls(
            common=CommonConfig.from_env(env, service="mta_worker", default_port=50065),
            smarthost=env_host_port(env, "POSTWIRE_SMARTHOST", "127.0.0.1:1025"),
            smtp_timeout=env_float(env, "POSTWIRE_SMTP_TIMEOUT_SECONDS", 300.0, minimum=1.0),
            hostname=env_str(env, "POSTWIRE_HOSTNAME", "postwire.localhost"),
            retry=RetryPolicy(
                base_seconds=env_float(env, "POSTWIRE_RETRY_BASE_SECONDS", 60.0, minimum=0.1),
                max_seconds=env_float(env, "POSTWIRE_RETRY_MAX_SECONDS", 3600.0, minimum=0.1),
                give_up_after=timedelta(
                    seconds=env_float(env, "POSTWIRE_RETRY_GIVE_UP_SECONDS", 5 * 86400.0)
                ),
            ),
            ack_wait=env_float(env, "POSTWIRE_ACK_WAIT_SECONDS", 30.0, minimum=1.0),
            concurrency=env_int(env, "POSTWIRE_WORKER_CONCURRENCY", 32, minimum=1),
            retry_concurrency=env_int(env, "POSTWIRE_RETRY_CONCURRENCY", 8, minimum=1),
            slots_per_destination=env_int(env, "POSTWIRE_MAX_SLOTS_PER_DESTINATION", 16, minimum=1),
        )

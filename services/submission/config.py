from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from libs.config import CommonConfig, env_str


@dataclass(frozen=True, slots=True)
class SubmissionConfig:
    common: CommonConfig
    policy_addr: str
    template_addr: str
    # GetMessage's timeline comes from the events service (postwire.internal.v1.EventReaderService).
    events_addr: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SubmissionConfig:
        return cls(
            # Submission has always had twice the usual pool: it writes every accepted message.
            common=CommonConfig.from_env(
                env, service="submission", default_port=50061, default_pool_max_size=20
            ),
            policy_addr=env_str(env, "POSTWIRE_POLICY_ADDR", "127.0.0.1:50063"),
            template_addr=env_str(env, "POSTWIRE_TEMPLATE_ADDR", "127.0.0.1:50062"),
            events_addr=env_str(env, "POSTWIRE_EVENTS_ADDR", "127.0.0.1:50066"),
        )

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from libs.config import CommonConfig, env_int, env_str


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    common: CommonConfig
    routes: dict[str, str]  # public service full name -> backend target
    # POSTWIRE_EDGE_MAX_STREAMS: server streams (StreamEvents) forwarded at once; each holds a
    # thread of the edge's pool for its life, so past this a new one is refused (RESOURCE_EXHAUSTED).
    max_streams: int = 256

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EdgeConfig:
        return cls(
            common=CommonConfig.from_env(env, service="edge", default_port=50051),
            routes={
                "postwire.v1.MailService": env_str(env, "POSTWIRE_SUBMISSION_ADDR", "127.0.0.1:50061"),
                "postwire.v1.TemplateService": env_str(env, "POSTWIRE_TEMPLATE_ADDR", "127.0.0.1:50062"),
                "postwire.v1.EventService": env_str(env, "POSTWIRE_EVENTS_ADDR", "127.0.0.1:50066"),
                "postwire.v1.WebhookService": env_str(env, "POSTWIRE_EVENTS_ADDR", "127.0.0.1:50066"),
                "postwire.v1.AdminService": env_str(env, "POSTWIRE_POLICY_ADDR", "127.0.0.1:50063"),
                "postwire.v1.SuppressionService": env_str(env, "POSTWIRE_POLICY_ADDR", "127.0.0.1:50063"),
                "postwire.v1.DomainService": env_str(env, "POSTWIRE_POLICY_ADDR", "127.0.0.1:50063"),
            },
            max_streams=env_int(env, "POSTWIRE_EDGE_MAX_STREAMS", 256, minimum=1),
        )

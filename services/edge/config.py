from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from libs.config import CommonConfig, env_str


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    common: CommonConfig
    routes: dict[str, str]  # public service full name -> backend target

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
        )

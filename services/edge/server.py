"""Wiring for the edge: the public gRPC address with reflection over every public service."""

from __future__ import annotations

from collections.abc import Mapping

# Imported for their descriptors: reflection and the forwarder read them from the default pool.
from postwire.v1 import (  # noqa: F401
    admin_service_pb2,
    domain_service_pb2,
    event_service_pb2,
    mail_service_pb2,
    suppression_service_pb2,
    template_service_pb2,
    webhook_service_pb2,
)

from libs.grpcx.server import GrpcServer
from libs.service_main import Service, run_main, serve
from services.edge.config import EdgeConfig
from services.edge.forwarder import Forwarder


async def run(env: Mapping[str, str]) -> None:
    config = EdgeConfig.from_env(env)

    async def wire(server: GrpcServer) -> Service:
        forwarder = Forwarder(config.routes)
        server.server.add_generic_rpc_handlers([forwarder])
        for name in config.routes:
            server.reflect(name)
        return Service(close=[forwarder.close])

    await serve(config.common, env, wire)


def main() -> None:
    run_main(run)

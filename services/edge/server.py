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

from libs.config import CommonConfig
from libs.grpcx.threaded_server import ThreadedGrpcServer
from libs.service_main import Service, run_main, serve_on
from services.edge.config import EdgeConfig
from services.edge.forwarder import Forwarder


async def run(env: Mapping[str, str]) -> None:
    config = EdgeConfig.from_env(env)

    def build(common: CommonConfig) -> ThreadedGrpcServer:
        # grpc's thread server, not grpc.aio: see libs.grpcx.threaded_server for why.
        return ThreadedGrpcServer(
            common.listen,
            service=common.service,
            max_in_flight=common.max_in_flight,
            max_streams=config.max_streams,
            max_connection_age=common.max_connection_age_seconds,
            max_connection_age_grace=common.max_connection_age_grace_seconds,
        )

    async def wire(server: ThreadedGrpcServer) -> Service:
        forwarder = Forwarder(config.routes)
        server.server.add_generic_rpc_handlers([forwarder])
        for name in config.routes:
            server.reflect(name)
        return Service(close=[forwarder.close])

    await serve_on(config.common, env, build, wire)


def main() -> None:
    run_main(run)

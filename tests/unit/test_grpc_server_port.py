"""A server asked to listen on a port another one holds fails to start, instead of sharing it."""

from __future__ import annotations

import pytest

from libs.embedded.ports import free_port
from libs.grpcx.server import GrpcServer


async def test_a_second_server_on_a_taken_port_fails_to_start() -> None:
    listen = f"127.0.0.1:{free_port()}"
    first = GrpcServer(listen, internal_token="t")
    await first.server.start()
    try:
        with pytest.raises((OSError, RuntimeError)):
            GrpcServer(listen, internal_token="t")
    finally:
        await first.server.stop(None)

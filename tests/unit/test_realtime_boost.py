"""POSTWIRE_REALTIME_WHEN=shedding: a service raises itself to SCHED_RR only from a refusal (the
edge's own, or a call the edge marked while refusing) until a while after the last one, and goes
back to the normal class, with its nice value, after; only the edge can mark a call."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from libs import shedding
from libs.config import CommonConfig, ConfigError
from libs.grpcx.server import GrpcServer
from libs.priority import realtime_permitted
from services.edge.forwarder import _forwardable

ROOT = Path(__file__).resolve().parents[2]

# In a child: scheduling policies are per thread and would outlive the test in this process.
_PROBE = """
import os, threading
from libs import shedding
from libs.priority import RealtimeBoost
now = [0.0]
shedding._clock = lambda: now[0]
os.setpriority(os.PRIO_PROCESS, 0, 3)
boost = RealtimeBoost(7, active=shedding.active)
shedding.on_shedding(boost.signal)
started, stop = threading.Event(), threading.Event()
def worker():
    started.set()
    stop.wait()
t = threading.Thread(target=worker); t.start(); started.wait()
def policies():
    tids = [int(x) for x in os.listdir("/proc/self/task")]
    return sorted({(os.sched_getscheduler(i), os.sched_getparam(i).sched_priority, os.getpriority(os.PRIO_PROCESS, i)) for i in tids})
seen = [policies()]
shedding.note(); seen.append(policies())
now[0] = 0.9; boost.settle(); seen.append(policies())
shedding.note(); now[0] = 1.5; boost.settle(); seen.append(policies())
now[0] = 2.0; boost.settle(); seen.append(policies())
print(seen)
stop.set(); t.join()
"""


def _may_set_realtime() -> bool:
    return os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_RTPRIO)[0] >= 7


def test_raised_from_a_signal_until_the_hold_after_the_last_then_back_with_its_nice_value() -> None:
    if not _may_set_realtime():  # without the privilege the service refuses to start instead
        assert not realtime_permitted(7)
        return
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    normal, raised = (os.SCHED_OTHER, 0, 3), (os.SCHED_RR, 7, 3)
    # before; a refusal noted; 0.9 s later; noted again at 0.9, 1.5 s; 2.0 s (1.1 s after the last)
    assert out == str([[normal], [raised], [raised], [raised], [normal]])


def test_the_edge_marks_what_it_forwards_while_it_refuses_and_never_passes_on_a_callers_mark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caller = (("authorization", "Bearer k"), shedding.MARK)
    monkeypatch.setattr(shedding, "_last", float("-inf"))
    assert not shedding.active()
    assert _forwardable(caller)[0] == ("authorization", "Bearer k")
    assert shedding.KEY not in dict(_forwardable(caller))
    shedding.note()  # the edge refused a call
    assert shedding.active()
    assert dict(_forwardable(caller))[shedding.KEY] == "1"
    assert [k for k, _ in _forwardable(caller)].count(shedding.KEY) == 1
    monkeypatch.setattr(shedding, "_last", time.monotonic() - shedding.HOLD_SECONDS - 0.01)
    assert not shedding.active()
    assert shedding.KEY not in dict(_forwardable(caller))


def test_a_marked_call_is_recognised_and_an_unmarked_one_is_not() -> None:
    assert shedding.marked((shedding.MARK, ("authorization", "Bearer t")))
    assert not shedding.marked((("authorization", "Bearer t"),))
    assert not shedding.marked(None)


METHOD = "/postwire.v1.Echo/Call"


class _Echo(grpc.GenericRpcHandler):
    def service(self, details: grpc.HandlerCallDetails) -> Any:
        if details.method != METHOD:
            return None

        async def call(request: bytes, context: Any) -> bytes:
            return request

        return grpc.unary_unary_rpc_method_handler(call)


async def test_a_service_that_serves_a_marked_call_hears_of_it_and_not_of_an_unmarked_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shedding, "_last", float("-inf"))
    heard: list[float] = []  # where a service with POSTWIRE_REALTIME_WHEN=shedding raises itself
    monkeypatch.setattr(shedding, "_listeners", [lambda: heard.append(time.monotonic())])
    server = GrpcServer("127.0.0.1:0", internal_token="t", service="echo")
    server.server.add_generic_rpc_handlers([_Echo()])
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = channel.unary_unary(METHOD)
            assert await call(b"a", timeout=5) == b"a"
            assert heard == [] and not shedding.active()
            assert await call(b"b", metadata=(shedding.MARK,), timeout=5) == b"b"
            assert len(heard) == 1 and shedding.active()
    finally:
        await server.stop(0)


def test_when_is_always_for_the_edge_and_shedding_elsewhere_by_default_and_can_be_set() -> None:
    def when(service: str, **env: str) -> str:
        return CommonConfig.from_env(env, service=service, default_port=1).realtime_when

    assert when("edge") == "always"
    assert when("submission") == when("policy") == "shedding"
    assert when("submission", POSTWIRE_REALTIME_WHEN="Always") == "always"
    assert when("edge", POSTWIRE_REALTIME_WHEN="shedding") == "shedding"
    with pytest.raises(ConfigError, match="POSTWIRE_REALTIME_WHEN"):
        when("submission", POSTWIRE_REALTIME_WHEN="sometimes")

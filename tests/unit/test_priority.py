"""POSTWIRE_NICE: the pipeline's workers yield the CPU to the front door by default; any service
can be set; the priority is only ever lowered, on every thread of the process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from libs.config import CommonConfig, ConfigError

_PROBE = """
import os, sys, threading
from libs.priority import lower_priority
started = threading.Event()
stop = threading.Event()
def worker():
    started.set()
    stop.wait()
t = threading.Thread(target=worker); t.start(); started.wait()
lower_priority(int(sys.argv[1]))
tids = [int(x) for x in os.listdir("/proc/self/task")]
print(sorted({os.getpriority(os.PRIO_PROCESS, tid) for tid in tids}))
stop.set(); t.join()
"""


def _nice_after(value: int) -> str:
    return subprocess.run(
        [sys.executable, "-c", _PROBE, str(value)], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_pipeline_workers_default_to_a_lower_priority_than_the_front_door() -> None:
    assert {
        s: CommonConfig.from_env({}, service=s, default_port=1).nice
        for s in ("router", "mta_worker", "events")
    } == {
        "router": 10,
        "mta_worker": 10,
        "events": 10,
    }
    for service in ("edge", "submission", "policy", "template", "inbound"):
        assert CommonConfig.from_env({}, service=service, default_port=1).nice == 0
    assert CommonConfig.from_env({"POSTWIRE_NICE": "0"}, service="router", default_port=1).nice == 0
    assert CommonConfig.from_env({"POSTWIRE_NICE": "5"}, service="edge", default_port=1).nice == 5
    with pytest.raises(ConfigError, match="POSTWIRE_NICE"):
        CommonConfig.from_env({"POSTWIRE_NICE": "-5"}, service="edge", default_port=1)


def test_every_thread_steps_back_and_zero_changes_nothing() -> None:
    current = os.getpriority(os.PRIO_PROCESS, 0)  # the test run may itself be niced
    assert _nice_after(7) == f"[{max(7, current)}]"
    assert _nice_after(0) == f"[{current}]"

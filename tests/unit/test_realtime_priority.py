"""POSTWIRE_REALTIME_PRIORITY: off by default for every service; when set, every thread of the
service (those already running and those started later) runs under SCHED_RR at that priority;
without the privilege for it the service does not start, and says why in one line."""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from libs.config import CommonConfig, ConfigError

ROOT = Path(__file__).resolve().parents[2]
_PR_CAPBSET_DROP = 24  # <linux/prctl.h>
_CAP_SYS_NICE = 23  # <linux/capability.h>

# Run in a child: scheduling policies are per thread and would outlive the test in this process.
_PROBE = """
import os, sys, threading
from libs.priority import realtime_permitted, run_realtime
if sys.argv[2] == "unprivileged":
    import resource
    resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
    if os.geteuid() == 0:
        os.setuid(65534)  # root may set any priority whatever its RLIMIT_RTPRIO
started, stop = threading.Event(), threading.Event()
def worker():
    started.set()
    stop.wait()
before = threading.Thread(target=worker); before.start(); started.wait()
permitted = realtime_permitted(int(sys.argv[1]))
try:
    run_realtime(int(sys.argv[1]))
    outcome = "set"
except PermissionError:
    outcome = "refused"
started.clear()
after = threading.Thread(target=worker); after.start(); started.wait()
tids = [int(x) for x in os.listdir("/proc/self/task")]
policies = sorted({(os.sched_getscheduler(t), os.sched_getparam(t).sched_priority) for t in tids})
print(outcome, permitted, policies)
stop.set(); before.join(); after.join()
"""


def _probe(priority: int, privilege: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", _PROBE, str(priority), privilege],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.strip()


def _may_set_realtime() -> bool:
    return os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_RTPRIO)[0] >= 10


def _priority(service: str, **env: str) -> int:
    return CommonConfig.from_env(env, service=service, default_port=1).realtime_priority


def test_off_by_default_and_out_of_range_values_are_refused_by_name() -> None:
    for service in ("edge", "submission", "policy", "template", "router", "mta_worker", "events", "inbound"):
        assert _priority(service) == 0
    assert _priority("edge", POSTWIRE_REALTIME_PRIORITY="10") == 10
    assert _priority("submission", POSTWIRE_REALTIME_PRIORITY="99") == 99
    for bad in ("100", "-1", "high"):
        with pytest.raises(ConfigError, match="POSTWIRE_REALTIME_PRIORITY"):
            _priority("policy", POSTWIRE_REALTIME_PRIORITY=bad)


def test_zero_leaves_every_thread_as_it_was() -> None:
    assert _probe(0, "as-is").endswith(f"[({os.SCHED_OTHER}, 0)]")


def test_every_thread_runs_round_robin_at_the_priority_when_permitted() -> None:
    if _may_set_realtime():  # root, as `make test` runs on CI
        assert _probe(10, "as-is") == f"set True [({os.SCHED_RR}, 10)]"
    else:  # without the privilege the setting is refused, never half applied
        assert _probe(10, "as-is") == f"refused False [({os.SCHED_OTHER}, 0)]"


def test_without_the_privilege_it_raises_and_changes_nothing() -> None:
    assert _probe(10, "unprivileged") == f"refused False [({os.SCHED_OTHER}, 0)]"


def _without_cap_sys_nice() -> None:
    """In the child before exec: no real-time priority allowed by rlimit, and, for root, no
    CAP_SYS_NICE after exec (dropped from the bounding set), the way a container without it runs."""
    resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_CAPBSET_DROP, _CAP_SYS_NICE, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_SYS_NICE)")


@pytest.mark.parametrize("when", ["shedding", "always"])
def test_a_service_will_not_start_without_the_priority_it_was_given(when: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.edge"],
        env={
            **os.environ,
            "POSTWIRE_REALTIME_PRIORITY": "10",
            "POSTWIRE_REALTIME_WHEN": when,
            "POSTWIRE_LISTEN": "127.0.0.1:1",
        },
        capture_output=True,
        text=True,
        cwd=ROOT,
        preexec_fn=_without_cap_sys_nice,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert line.startswith("postwire: configuration error: POSTWIRE_REALTIME_PRIORITY=10: not permitted")
    assert "edge needs CAP_SYS_NICE" in line and "\n" not in line

"""A service's CPU priority: POSTWIRE_NICE (how far it steps back when the CPU is contended) and
POSTWIRE_REALTIME_PRIORITY (how it goes first).

On a shared host the pipeline's workers (router, mta_worker, events) can use every core while
a caller waits for SendEmail's answer, or for a refusal that should take milliseconds: the
front door's event loop then waits for the CPU, and every call it has not yet read waits with
it (grpc.aio reads a new call only after several turns of that loop). The pipeline's work
keeps (it is durable in JetStream) and catches up when callers let up; a caller's does not.
Measured: bench/README.md "A/B: front door".

Only ever lowers the priority (no privilege needed). Under Linux's autogroup scheduling a
process that leads its own session (as Postwire's launcher and systemd start it) is weighed
against other sessions as a group, so the group's nice value is set as well; under Kubernetes
each pod has its own CPU share and the setting matters only among a pod's own processes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from libs.config import MAX_REALTIME_PRIORITY

__all__ = ["RealtimeBoost", "lower_priority", "realtime_permitted", "run_realtime"]

_log = logging.getLogger(__name__)
_TASKS = "/proc/self/task"
_AUTOGROUP = "/proc/self/autogroup"


def _threads() -> list[int]:
    # Linux keeps a scheduling policy and a nice value per thread: set every thread there is
    # (grpc's, asyncio's executor), not just this one; threads started later inherit them.
    return [int(t) for t in os.listdir(_TASKS)] if os.path.isdir(_TASKS) else [0]


def lower_priority(nice: int) -> None:
    if nice <= 0:
        return
    nice = min(nice, 19)
    for thread in _threads():
        try:
            if os.getpriority(os.PRIO_PROCESS, thread) < nice:
                os.setpriority(os.PRIO_PROCESS, thread, nice)
        except OSError:  # a thread that ended meanwhile
            continue
    if os.getsid(0) == os.getpid():  # only a session leader owns its autogroup alone
        try:
            with open(_AUTOGROUP, "w") as group:
                group.write(str(nice))
        except OSError:
            _log.debug("no autogroup to set (kernel without it, or not permitted)")


def run_realtime(priority: int) -> None:
    """Every thread of the process under SCHED_RR at `priority` (1-99); 0 changes nothing.

    Why the front door may want it: on a host whose cores the other services fill, a fair
    scheduler gives each process about its share of the CPU; the edge, which needs more than that
    share while a burst is refused, then waits tens of milliseconds at a time for a core, so a
    refusal that costs it microseconds reaches the caller late, and submission's event loop,
    preempted the same way, reads new calls late and accepted calls wait. Weights (nice,
    autogroups) measured no better; a real-time class did (bench/README.md "A/B: the edge's CPU
    priority"). Every thread, since one at normal priority preempted while it holds the GIL
    would stall the real-time ones; round-robin, not FIFO, so a process's threads take turns; the
    kernel's real-time throttling (sched_rt_runtime_us, 95 % by default) still leaves the rest of
    the host a share if a service ever spins.

    Raises PermissionError without CAP_SYS_NICE or an RLIMIT_RTPRIO that allows `priority`: the
    setting is explicit, so not getting it is the operator's to know, not a log line to miss.
    """
    if priority > 0:
        _set_every_thread(os.SCHED_RR, _in_range(priority))


def realtime_permitted(priority: int) -> bool:
    """Whether this process may run threads under SCHED_RR at `priority`: tried on a thread of
    its own that ends at once, so the caller's threads keep their policy."""
    permitted: list[bool] = []

    def attempt() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(_in_range(priority)))
        except PermissionError:
            permitted.append(False)
        else:
            permitted.append(True)

    probe = threading.Thread(target=attempt, name="realtime-probe")
    probe.start()
    probe.join()
    return permitted == [True]


class RealtimeBoost:
    """The process at SCHED_RR `priority` only while the platform is shedding load: raised on a
    `signal()`, back to the normal class once `active()` (libs.shedding.active: the hold after the
    last refusal) says it is over.

    Why not always: a real-time thread runs at every wake-up, so a service batches less and the
    pipeline it preempts delivers less: measured, ~25 % fewer single sends delivered and ~1.2 ms
    more CPU per message with the front door always real-time (bench/README.md "A/B: the edge's
    CPU priority"). While refusing, that is the price of answering callers in time.
    """

    def __init__(self, priority: int, *, active: Callable[[], bool]) -> None:
        self.priority = _in_range(priority)
        self._active = active
        self._raised = False
        self._lock = threading.Lock()

    def signal(self) -> None:
        if not self._raised:
            with self._lock:
                if not self._raised:
                    _set_every_thread(os.SCHED_RR, self.priority)
                    self._raised = True

    def settle(self) -> None:
        """Back to the normal class once shedding is over (called every fraction of the hold)."""
        if self._raised and not self._active():
            with self._lock:
                if self._raised and not self._active():
                    _set_every_thread(os.SCHED_OTHER, 0)
                    self._raised = False

    def run_settler(self, every: float) -> None:
        def settle_forever() -> None:
            while True:
                time.sleep(every)
                self.settle()

        threading.Thread(target=settle_forever, name="realtime-settle", daemon=True).start()


def _in_range(priority: int) -> int:
    return min(max(priority, 1), MAX_REALTIME_PRIORITY)


def _set_every_thread(policy: int, priority: int) -> None:
    param = os.sched_param(priority)
    for thread in _threads():
        try:
            os.sched_setscheduler(thread, policy, param)
        except ProcessLookupError:  # a thread that ended meanwhile
            continue

"""POSTWIRE_NICE: how far a service steps back when the CPU is contended.

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

__all__ = ["lower_priority"]

_log = logging.getLogger(__name__)
_TASKS = "/proc/self/task"
_AUTOGROUP = "/proc/self/autogroup"


def lower_priority(nice: int) -> None:
    if nice <= 0:
        return
    nice = min(nice, 19)
    # Linux keeps a nice value per thread: set every thread there is (grpc, asyncio's
    # executor), not just this one; threads started later inherit it.
    threads = [int(t) for t in os.listdir(_TASKS)] if os.path.isdir(_TASKS) else [0]
    for thread in threads:
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

"""Which CPUs a node's threads run on (the launch file's ``cpus:`` and ``isolate:``, planned
by :mod:`perception.system.cpu_plan`): this process's threads, their names, and pinning."""

from __future__ import annotations

import os


def threads() -> set[int]:
    """This process's thread ids (Linux; empty elsewhere)."""
    return {int(t) for t in os.listdir("/proc/self/task")} if os.path.isdir("/proc/self/task") else set()


def thread_name(tid: int) -> str:
    """A thread's name as the kernel has it (ZeroMQ names its own ``ZMQbg/...``)."""
    try:
        with open(f"/proc/self/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def pin(cpus: set[int], tids: set[int] | None = None) -> None:
    """Run threads ``tids`` (default: every thread of this process) on ``cpus``. Pinning the
    whole process now covers the threads it has (imports start some, such as OpenBLAS's
    pool) and, since new threads inherit their creator's CPUs, every later one (ZeroMQ's,
    ONNX Runtime's)."""
    for tid in threads() if tids is None else tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass

"""Whether a silent node is starved of CPU or hung, from the kernel's scheduler statistics.

A node whose heartbeat stopped is either hung (a deadlock, a blocking call, a busy loop that
never reaches its heartbeat, SIGSTOP) or only starved: runnable, but another process (a hog
at higher priority, a compile, a training run) has the CPUs. Killing a starved node does not
help it (its replacement is starved too) and loses what it had queued, so the supervisor
gives a starved node longer before it restarts it.

The kernel says which: ``/proc/<pid>/schedstat`` holds, for the process's main thread (the
one that sends heartbeats), the nanoseconds it ran on a CPU and the nanoseconds it waited,
runnable, on a run queue. Over a silent interval a starved thread mostly waited; a hung one
did not wait (blocked or stopped: neither figure moves) or ran (a busy loop). No library
reads this file (psutil gives CPU times, not run-queue waits), hence the few lines here.
Where the file does not exist (not Linux, or no schedstats), nothing is called starved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class SchedSample:
    """One reading of a thread's scheduler figures."""

    at_s: float  #: ``time.monotonic()`` of the reading
    run_ns: int  #: time on a CPU so far
    wait_ns: int  #: time runnable but waiting for a CPU so far


def read_schedstat(pid: int) -> SchedSample | None:
    """The figures of ``pid``'s main thread, or None when they cannot be read."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            run, wait, _slices = f.read().split()[:3]
        return SchedSample(time.monotonic(), int(run), int(wait))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class SilenceVerdict:
    """What a thread did between two readings: ``waited_s`` runnable on a run queue,
    ``ran_s`` on a CPU, over ``elapsed_s``."""

    elapsed_s: float
    ran_s: float
    waited_s: float

    @property
    def starved(self) -> bool:
        """Mostly waiting for a CPU: it waited longer than it ran, for at least a fifth of
        the interval (a blocked or stopped thread waits ~0; a busy loop runs more than it
        waits)."""
        return self.waited_s > self.ran_s and self.waited_s >= 0.2 * self.elapsed_s

    def __str__(self) -> str:
        return (
            f"in the last {self.elapsed_s:.1f} s it waited {self.waited_s:.1f} s for a CPU and ran {self.ran_s:.2f} s"
        )


def verdict(before: SchedSample, after: SchedSample) -> SilenceVerdict:
    """What the thread did from ``before`` to ``after`` (readings of the same pid)."""
    return SilenceVerdict(
        elapsed_s=max(after.at_s - before.at_s, 1e-9),
        ran_s=max(after.run_ns - before.run_ns, 0) / 1e9,
        waited_s=max(after.wait_ns - before.wait_ns, 0) / 1e9,
    )

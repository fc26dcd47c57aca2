"""Keep chosen CPUs from halting while a run lasts: an idle-priority poll loop on each
(``supervisor: {poll_idle: [0]}`` in a launch file).

A CPU that sat idle between two frames and halted runs the next milliseconds of work slower
than one that kept running. On the 2-core VM the figures here come from (no cpuidle driver:
an idle vCPU halts), the preprocess's letterbox after a 40 ms sleep took 0.83-0.98 ms (p50)
against 0.36 ms back to back, and still 0.57-0.91 ms after 2-20 ms of busy-waiting in the
same process; with a ``SCHED_IDLE`` loop on its CPU, so that the CPU never halted, 0.47-0.63
ms. In the live pipeline (segmenter isolated on CPU 1, the light nodes on CPU 0 with such a
loop), capture -> tracks minus inference p50 was 3.17, 3.51, 3.04, 3.03 and 2.98 ms against
3.41, 3.86, 3.69, 3.35 and 3.07 ms as shipped, five runs of each in turn
(``bench/pipeline.py --poll-idle``).

The system-wide cures are the kernel's ``idle=poll`` or a PM QoS request of 0 us held on
``/dev/cpu_dma_latency`` (where a cpuidle driver honours it): they keep every CPU busy for
good. ``poll_idle`` keeps only the CPUs named, only while the run lasts: one process on each
spins at ``SCHED_IDLE`` priority, which the kernel runs only when nothing else wants that CPU
and preempts at once when something does. The price is the power of a CPU that never rests
(``top`` shows it busy), and on a kernel with autogroups a share of the CPU from a node that
wants all of it (see :meth:`IdlePollers.start`): it is for CPUs with room to spare. Never
name the CPU an isolated segmenter infers on (the launch is refused): its loop would share
that CPU with the network. Each loop ends when the supervisor that started it does, however
it ends.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterable

log = logging.getLogger(__name__)

#: spins between two looks at whether the supervisor is still there (about 5-20 ms)
SPINS = 200_000


def poll(cpu: int, parent: int) -> None:
    """Spin on ``cpu`` at idle priority until ``parent`` (the supervisor) is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the supervisor, which stops this
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    spins = range(SPINS)
    while os.getppid() == parent:
        for _ in spins:
            pass


class IdlePollers:
    """The poll loops of one run: :meth:`start` one process a CPU, :meth:`stop` them."""

    def __init__(self) -> None:
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, cpus: Iterable[int]) -> None:
        for cpu in cpus:
            if cpu not in self.procs:
                # in the supervisor's session, unlike the nodes. With autogroups (on in most
                # kernels, this one too) a CPU is shared between sessions first, and a loop in a
                # session of its own delayed the nodes' wake-ups: detections -> tracks p50
                # 2.04-3.15 ms (2.27-2.31 in bench/pipeline.py --poll-idle runs) with that
                # session at default weight or nice 19, against 1.54-2.05 in the supervisor's
                # session; a loop that yields at each turn starved them (throughput 0.57). The
                # price: under contention the supervisor's session (this loop) and a busy
                # node's share the CPU; a CPU-bound process kept 0.59-0.99 of it (three runs)
                self.procs[cpu] = subprocess.Popen([sys.executable, "-m", __name__, str(cpu), str(os.getpid())])
        if self.procs:
            log.info(
                "CPU %s kept from halting (poll_idle) by pid %s",
                ", ".join(map(str, self.procs)),
                ", ".join(str(p.pid) for p in self.procs.values()),
            )

    def stop(self) -> None:
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            p.wait()
        self.procs.clear()


if __name__ == "__main__":
    poll(int(sys.argv[1]), int(sys.argv[2]))

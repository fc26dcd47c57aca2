"""When a steady stream's next message is due, for a reader that spins for it instead of
sleeping (``Subscriber(spin_us=...)``, the launch file's ``spin_us:``).

A reader that sleeps in ``poll`` is woken by the kernel when a message comes; on a virtual
machine whose idle CPU halted, that wake-up and the cold caches after it cost a tenth of a
millisecond or more on every frame, in the tail several times that. A reader that already
runs when the message comes picks it up within microseconds, with its code in cache. So a
reader that asks for it stops sleeping ``spin`` before a frame is due and checks its
sockets without sleeping until the frame comes, or until ``spin`` after it was due; then
it sleeps as usual. That costs CPU time (about one window per frame, counted in the
reader's ``spun_s``), and is worth it only with a CPU to spare: on a machine whose cores
all run the network it takes time from the network. While it spins it yields its CPU at
each check (``sched_yield``): a producer woken on the same CPU then sends at once, instead
of waiting for the spinner's time slice (measured without it: a sender's stamp to its send
took a whole millisecond, the scheduler's tick, for a few frames in half the runs).

When is "due": the last message's arrival plus the median spacing of the last few, per
topic (a camera's frames come at a steady rate; a stream that paused or stopped is not
spun for again until it comes back). Nothing in the standard library or NumPy predicts this;
it is a few lines.
"""

from __future__ import annotations

import os
import select
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import TypeVar

T = TypeVar("T")

#: arrivals kept per topic (the median of their spacings is the expected one)
KEEP = 9
#: a window takes at most this share of a stream's spacing (a faster stream is not spun for)
MAX_SHARE = 0.25


class Arrivals:
    """Arrival times (monotonic ns) of each topic's last messages and the window to spin in."""

    def __init__(self, spin_ns: int) -> None:
        if spin_ns < 0:
            raise ValueError(f"spin must be >= 0 ns, got {spin_ns}")
        self.spin_ns = spin_ns
        self._times: dict[str, deque[int]] = {}

    def add(self, topic: str, arrived_ns: int) -> None:
        times = self._times.get(topic)
        if times is None:
            times = self._times[topic] = deque(maxlen=KEEP)
        times.append(arrived_ns)

    def due_ns(self, topic: str) -> int | None:
        """When ``topic``'s next message is expected; None before three have come."""
        times = self._times.get(topic)
        if times is None or len(times) < 3:
            return None
        spacing = statistics.median(b - a for a, b in pairwise(times))
        if spacing <= 0 or 2 * self.spin_ns > MAX_SHARE * spacing:
            return None
        return times[-1] + int(spacing)

    def window(self, now_ns: int) -> tuple[int, int] | None:
        """``(start, end)`` in monotonic ns: from ``spin`` before the earliest next message
        that is due and not yet overdue by more than ``spin``, to ``spin`` after it; None
        when there is none (nothing steady, or every window passed already)."""
        if not self.spin_ns:
            return None
        best = None
        for topic in self._times:
            due = self.due_ns(topic)
            if due is not None and due + self.spin_ns > now_ns and (best is None or due < best):
                best = due
        return None if best is None else (best - self.spin_ns, best + self.spin_ns)


def poll_spinning(
    poll: Callable[[int], list[T]], bells: Sequence[int], timeout_ms: int, start_ns: int, end_ns: int
) -> tuple[list[T], float, bool]:
    """``poll(ms)`` (a subscriber's wait) until ``start_ns``, then ``poll(0)`` without sleeping
    until something comes or ``end_ns``, then ``poll`` for what is left of ``timeout_ms`` (-1:
    no limit). The wait before ``start_ns`` is in ZeroMQ's whole milliseconds and then, to the
    microsecond, on the subscriber's doorbell sockets ``bells`` (which announce every message
    of their topics). Returns what came, the seconds spent spinning, and whether it came
    while spinning."""
    now = time.monotonic_ns()
    until = now + timeout_ms * 1_000_000 if timeout_ms >= 0 else None
    if start_ns > now:
        wait_ms = (start_ns - now) // 1_000_000
        out = poll(wait_ms if until is None else min(wait_ms, timeout_ms))
        now = time.monotonic_ns()
        if out or (until is not None and now >= until):
            return out, 0.0, False
        if bells and start_ns > now:
            select.select(bells, [], [], (min(start_ns, until or start_ns) - now) / 1e9)
            now = time.monotonic_ns()
    end_ns = end_ns if until is None else min(end_ns, until)
    t0 = now
    while not (out := poll(0)) and now < end_ns:
        os.sched_yield()
        now = time.monotonic_ns()
    spun = (now - t0) / 1e9
    if out:
        return out, spun, True
    return poll(-1 if until is None else max(0, (until - now) // 1_000_000)), spun, False

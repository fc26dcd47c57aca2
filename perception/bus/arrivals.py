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
all run the network it takes time from the network.

When is "due": the last message's arrival plus the median spacing of the last few, per
topic (a camera's frames come at a steady rate; a stream that paused or stopped is not
spun for again until it comes back). Nothing in the standard library or NumPy predicts this;
it is a few lines.
"""

from __future__ import annotations

import statistics
from collections import deque

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
        spacing = statistics.median(b - a for a, b in zip(times, list(times)[1:]))
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

"""Readers that spin for a steady topic's next message (``spin_us``): when the window is,
that every message still comes once and in order, that a message due comes while the reader
spins, and that a stream that stops is not spun for (the CPU stays idle)."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from perception.bus import schema
from perception.bus.arrivals import Arrivals, poll_spinning
from perception.bus.pubsub import Publisher, Subscriber, header_for
from perception.bus.schema import Envelope, Source
from perception.bus.shm_ring import FrameRing, segment_name
from perception.node.config import ConfigError
from perception.node.loop import NodeContext, NodeLoop
from perception.system.launch import load_launch

MS = 1_000_000


def test_the_window_is_around_the_next_message_of_a_steady_stream() -> None:
    a = Arrivals(500_000)
    assert a.window(0) is None
    for t in (0, 33 * MS, 66 * MS):
        a.add("frames", t)
    assert a.window(67 * MS) == (99 * MS - 500_000, 99 * MS + 500_000)
    a.add("frames", 100 * MS)  # a late one: the spacing is the median, the next due from it
    assert a.due_ns("frames") == 133 * MS
    assert a.window(134 * MS) is None  # overdue by more than the spin: not spun for again
    a.add("detections", 110 * MS)  # too few of these yet to expect the next
    assert a.window(120 * MS) == (133 * MS - 500_000, 133 * MS + 500_000)
    for t in (120 * MS, 130 * MS):
        a.add("detections", t)
    assert a.window(131 * MS) == (133 * MS - 500_000, 133 * MS + 500_000)  # the earliest due
    assert a.window(134 * MS) == (140 * MS - 500_000, 140 * MS + 500_000)  # frames overdue: the next one
    fast = Arrivals(500_000)
    for t in range(0, 10 * MS, MS):  # 1 kHz: a window of 1 ms a message would be a core spinning
        fast.add("frames", t)
    assert fast.due_ns("frames") is None and fast.window(9 * MS) is None
    assert Arrivals(0).window(67 * MS) is None
    with pytest.raises(ValueError, match="spin must be >= 0"):
        Arrivals(-1)


def test_poll_spinning_keeps_to_the_timeout_and_says_what_came_while_spinning() -> None:
    def sleeper(ms: int) -> list[str]:
        time.sleep(max(ms, 0) / 1000)
        return []

    t0 = time.monotonic_ns()
    out, spun, caught = poll_spinning(sleeper, [], 20, t0 + 50 * MS, t0 + 51 * MS)  # the window is after the timeout
    assert out == [] and spun == 0.0 and not caught and 19 * MS <= time.monotonic_ns() - t0 < 45 * MS
    due = time.monotonic_ns() + 8 * MS

    def arrives(ms: int) -> list[str]:
        if time.monotonic_ns() >= due:
            return ["frame"]
        time.sleep(min(max(ms, 0) / 1000, (due - time.monotonic_ns()) / 1e9))
        return []

    t0 = time.monotonic_ns()
    out, spun, caught = poll_spinning(arrives, [], 100, t0 + 5 * MS, t0 + 30 * MS)
    assert out == ["frame"] and caught and 0.001 < spun < 0.02, spun  # spun from 5 ms to about 8


def _stream(pub: Publisher, ring: FrameRing, n: int, spacing_s: float, stop: threading.Event) -> None:
    img = np.zeros((48, 64, 3), np.uint8)
    for seq in range(n):
        if stop.is_set():
            return
        frame = ring.claim(img.shape)
        frame[:] = seq % 251
        now = time.monotonic_ns()
        pub.send(Envelope("frames", seq, now, Source("c", seq, now), header_for(img)), frame)
        time.sleep(spacing_s)


def test_a_spinning_reader_gets_every_frame_while_it_spins_and_idles_when_they_stop() -> None:
    run_dir = tempfile.mkdtemp(prefix="spin-", dir="/tmp")
    ctx = zmq.Context()
    ring = FrameRing(segment_name(run_dir, "frames"), 8, 48 * 64 * 3)
    pub = Publisher(ctx, schema.endpoint("frames", run_dir), ring=ring, hwm=0)
    sub = Subscriber(ctx, {"frames": schema.endpoint("frames", run_dir)}, keep_newest=False, spin_us=2000)
    assert sub.bells["frames"].reader.client.connected
    n, spacing = 40, 0.03
    stop = threading.Event()
    sender = threading.Thread(target=_stream, args=(pub, ring, n, spacing, stop))
    sender.start()
    got = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not got or got[-1].envelope.seq < n - 1):
            for m in sub.poll(100):
                assert int(m.pixels[0, 0, 0]) == m.envelope.seq % 251  # type: ignore[index]
                got.append(m)
    finally:
        stop.set()
        sender.join()
    assert [m.envelope.seq for m in got] == list(range(n)) and sub.dropped == 0
    # from the fourth frame on each is expected; allow a few to miss the window on a busy machine
    assert sub.spin_caught >= (n - 3) * 0.6, sub.spin_caught
    spun = sub.spun_s
    # a window is 4 ms at most, and the wait before it ends on time (on the bell, to the
    # microsecond): a caught frame costs about half of it, the 2 ms before it was due
    assert spun / sub.spin_caught < 0.0045, spun
    cpu0 = time.process_time()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.5:  # the stream stopped: at most one more window, then sleep
        assert sub.poll(100) == []
    assert sub.spun_s - spun < 0.01 and time.process_time() - cpu0 < 0.15
    sub.close()
    pub.close()
    ctx.term()


def test_spin_us_is_a_node_key_checked_at_load_and_given_to_the_node(tmp_path: Path, run_dir: str) -> None:
    from perception.system.supervisor import Supervisor

    f = tmp_path / "l.yaml"
    f.write_text("nodes:\n  tracker: {spin_us: 500}\n  publisher: {bind: 'tcp://127.0.0.1:17994'}\n")
    spec = load_launch(f)
    assert [n.spin_us for n in spec.nodes] == [500, 0] and "spin_us" not in spec.nodes[0].params
    sup = Supervisor(spec, run_dir)
    try:
        cmd, other = sup._command(spec.nodes[0]), sup._command(spec.nodes[1])
    finally:
        sup.shutdown()
    assert cmd[cmd.index("--spin-us") + 1] == "500" and "--spin-us" not in other
    for bad in ("-1", "true", "0.5", "20000"):
        with pytest.raises(
            ConfigError,
            match=r"node 'tracker': key 'spin_us' must be a whole number of microseconds "
            r"from 0 to 10000, e\.g\. 500, got",
        ):
            load_launch(f, [f"tracker.spin_us={bad}"])


def test_a_spinning_node_reports_what_spinning_cost() -> None:
    class Sink:
        inputs, outputs = ("detections",), ()

        def step(self, now_ns: int, msg: object) -> list:
            return []

        def next_wakeup_ns(self, now_ns: int) -> None:
            return None

        def counters(self) -> dict:
            return {}

    run_dir = tempfile.mkdtemp(prefix="spin-", dir="/tmp")
    loop = NodeLoop(NodeContext("sink", run_dir, spin_us=300), Sink())
    plain = NodeLoop(NodeContext("plain", run_dir), Sink())
    try:
        assert loop.sub is not None and loop.sub.arrivals.spin_ns == 300_000
        loop.sub.spun_s, loop.sub.spin_caught = 0.0125, 7
        counters = loop.status().counters
        assert counters["spun_ms"] == 12.5 and counters["spin_caught"] == 7
        assert "spun_ms" not in plain.status().counters
    finally:
        loop.close()
        plain.close()

"""Frames in shared memory: a reader slower than the ring never gets a torn frame (the
generation check drops it, counted), and kill -9 of a producer leaves no shared memory
behind after its restart or after the run."""

from __future__ import annotations

import gc
import os
import re
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zmq

from perception.bus import schema
from perception.bus.pubsub import Publisher, Received, Subscriber, header_for
from perception.bus.schema import Envelope, Source
from perception.bus.shm_ring import FrameRing, ShmConfig, ShmReader, SlotError, segment_name, segments
from perception.node.capabilities import Capabilities
from perception.node.loop import NodeContext, NodeLoop, Outgoing

from .conftest import next_external, pipeline_spec, start_pipeline


@pytest.mark.parametrize("in_place", [False, True], ids=["copied", "in-place"])
def test_a_slow_reader_never_gets_a_torn_or_wrong_frame(in_place: bool) -> None:
    """Copied out, a frame is whole or dropped; read in place, one whose slot was overwritten
    while it was used is caught by its ``unchanged`` check afterwards."""
    run_dir = tempfile.mkdtemp(prefix="shm-", dir="/tmp")
    ctx = zmq.Context()
    ring = FrameRing(segment_name(run_dir, "frames"), 2, 1 << 21)
    pub = Publisher(ctx, schema.endpoint("frames", run_dir), ring=ring, hwm=0)
    sub = Subscriber(ctx, {"frames": schema.endpoint("frames", run_dir)}, keep_newest=False, shm_views=in_place)
    time.sleep(0.3)
    n = 300
    stop = threading.Event()

    def write() -> None:  # as fast as it can: the reader falls behind a two-slot ring
        for k in range(n):
            img = np.full((480, 640, 3), k % 251, np.uint8)
            pub.send(Envelope("frames", k, 0, Source("c", k, 0), header_for(img)), img)
        stop.set()

    writer = threading.Thread(target=write)
    writer.start()
    got, torn_in_use = [], 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not stop.is_set() or len(got) + sub.dropped + torn_in_use < n):
        for m in sub.poll(50):
            px = m.pixels
            assert px is not None and px.shape == (480, 640, 3)
            value = m.envelope.seq % 251
            whole = px.min() == px.max() == value
            time.sleep(0.002)  # a slow consumer
            assert (m.unchanged is not None) == in_place
            if m.unchanged is not None and not m.unchanged():
                torn_in_use += 1  # overwritten while in use: what was computed is not trusted
                continue
            assert whole, f"frame {m.envelope.seq} is torn or another frame's"
            got.append(m.envelope.seq)
    writer.join()
    assert len(got) + sub.dropped + torn_in_use == n  # every frame whole, or counted as dropped
    assert sub.shm.torn + torn_in_use > 0  # the ring was overrun, and it was noticed
    assert sub.dropped >= sub.shm.torn
    pub.close()
    sub.close()
    ctx.term()
    assert segments(run_dir) == []


def _connected(pub: Publisher, poll: Callable[[], int], timeout_s: float = 30.0) -> None:
    """Send probe frames until the subscriber side has one (ZeroMQ's slow joiner: a frame
    sent before the connection is up is lost); ``poll`` returns how many arrived."""
    img = np.zeros((4, 4, 3), np.uint8)
    deadline = time.monotonic() + timeout_s
    k = 10_000
    while time.monotonic() < deadline:
        pub.send(Envelope("frames", k, 0, Source("c", k, 0), header_for(img)), img)
        k += 1
        if poll():
            return
    raise AssertionError("the subscriber never connected")


def test_a_claimed_slot_is_published_without_a_copy_and_read_in_place() -> None:
    """A producer renders into ``claim()``'s array; the publisher commits that slot (no
    copy), and a reader's view of it is the same memory."""
    run_dir = tempfile.mkdtemp(prefix="shm-", dir="/tmp")
    ctx = zmq.Context()
    ring = FrameRing(segment_name(run_dir, "frames"), 4, 1 << 20)
    pub = Publisher(ctx, schema.endpoint("frames", run_dir), ring=ring, hwm=0)
    sub = Subscriber(ctx, {"frames": schema.endpoint("frames", run_dir)}, keep_newest=False, shm_views=True)
    _connected(pub, lambda: len(sub.poll(100)))
    assert ring.claim((1000, 1000, 3)) is None  # larger than a slot
    slot, written = ring.next % ring.slots, ring.next
    view = ring.claim((48, 64, 3))
    assert view is not None and view.shape == (48, 64, 3)
    view[:] = 42
    pub.send(Envelope("frames", 0, 0, Source("c", 0, 0), header_for(view)), view)
    msgs: list = []
    deadline = time.monotonic() + 30
    while not msgs and time.monotonic() < deadline:
        msgs = sub.poll(100)
    ref = msgs[0].envelope.payload.shm
    assert ref is not None and ref.slot == slot and ring.next == written + 1  # the claimed slot, written once
    assert int(msgs[0].pixels.min()) == int(msgs[0].pixels.max()) == 42 and not msgs[0].pixels.flags.writeable
    assert msgs[0].unchanged()
    view[:] = 7  # a producer that writes into a slot after publishing it ...
    assert int(msgs[0].pixels[0, 0, 0]) == 7  # ... is seen by the reader's view: no copy in between
    pub.close()
    sub.close()
    ctx.term()


def test_a_step_on_a_frame_overwritten_meanwhile_publishes_nothing() -> None:
    """A node whose logic takes frames in place drops the step's outputs (and counts the
    frame as dropped) when the slot was overwritten while the step ran."""
    run_dir = tempfile.mkdtemp(prefix="shm-", dir="/tmp")
    ctx = zmq.Context()
    ring = FrameRing(segment_name(run_dir, "frames"), 2, 1 << 20)
    pub = Publisher(ctx, schema.endpoint("frames", run_dir), ring=ring, hwm=0)
    img = np.full((24, 32, 3), 5, np.uint8)

    class Copy:
        inputs, outputs = ("frames",), ("frames.rect",)
        overwrite = False

        def step(self, now_ns: int, msg: Received | None) -> list[Outgoing]:
            out = np.array(msg.pixels)  # type: ignore[union-attr]
            if self.overwrite:  # the producer laps the ring while this step runs
                for k in range(2):
                    pub.send(Envelope("frames", 100 + k, 0, Source("c", 100 + k, 0), header_for(img)), img)
            return [Outgoing("frames.rect", header_for(out), msg.envelope.source, out)]  # type: ignore[union-attr]

        def next_wakeup_ns(self, now_ns: int) -> None:
            return None

        def counters(self) -> dict:
            return {}

    logic = Copy()
    loop = NodeLoop(NodeContext("copy", run_dir), logic, ctx, Capabilities(frame_views=True))

    def steps() -> int:
        before = loop.stats.frames_in
        loop.run_once(100)
        return loop.stats.frames_in - before

    _connected(pub, steps)  # frames used whole: every step's output goes out
    assert loop.sub is not None and loop.stats.frames_out == loop.stats.frames_in and loop.sub.shm.torn == 0
    logic.overwrite = True
    before_in, before_out = loop.stats.frames_in, loop.stats.frames_out
    pub.send(Envelope("frames", 0, 0, Source("c", 0, 0), header_for(img)), img)
    dropped_before = loop.sub.dropped
    deadline = time.monotonic() + 30
    while loop.sub.shm.torn == 0 and time.monotonic() < deadline:
        loop.run_once(100)
    assert loop.sub.shm.torn >= 1 and loop.stats.frames_out == before_out  # nothing published
    # each torn frame is counted dropped, not taken in
    assert loop.stats.frames_in - before_in + loop.sub.dropped - dropped_before == loop.sub.shm.torn
    loop.close()
    pub.close()
    ctx.term()


def test_a_frame_too_large_for_a_slot_goes_over_the_socket() -> None:
    run_dir = tempfile.mkdtemp(prefix="shm-", dir="/tmp")
    ctx = zmq.Context()
    pub = Publisher(
        ctx, schema.endpoint("frames", run_dir), ring=FrameRing(segment_name(run_dir, "frames"), 2, 1000), hwm=0
    )
    sub = Subscriber(ctx, {"frames": schema.endpoint("frames", run_dir)}, keep_newest=False)
    time.sleep(0.3)
    small, big = np.full((10, 10, 3), 7, np.uint8), np.full((100, 100, 3), 9, np.uint8)
    for k, img in enumerate((small, big)):
        pub.send(Envelope("frames", k, 0, Source("c", k, 0), header_for(img)), img)
    msgs = []
    deadline = time.monotonic() + 5
    while len(msgs) < 2 and time.monotonic() < deadline:
        msgs += sub.poll(100)
    assert [m.envelope.payload.shm is not None for m in msgs] == [True, False]
    assert np.array_equal(msgs[0].pixels, small) and np.array_equal(msgs[1].pixels, big)
    reader = ShmReader()
    try:
        reader.read(msgs[0].envelope.payload.shm, msgs[1].envelope.payload)  # the header of another frame
        raise AssertionError("a slot reference that does not fit its header must be refused")
    except ValueError as e:
        assert "does not fit" in str(e)
    ref = msgs[0].envelope.payload.shm
    for name in ("perception-../../etc/passwd", "other-segment"):  # a path, or a segment not of ours
        with pytest.raises(SlotError, match=rf"shared-memory segment '{re.escape(name)}' is not one of ours"):
            reader.read(replace(ref, segment=name), msgs[0].envelope.payload)
    assert list(reader._maps) == [ref.segment]  # neither was opened
    pub.close()
    sub.close()
    ctx.term()


def test_a_ring_the_shared_memory_cannot_hold_leaves_nothing_and_its_frames_use_the_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full /dev/shm (Docker's 64 MB) would make a write into the ring kill the node with
    SIGBUS; the ring reserves its memory when made instead, and the node falls back to the
    socket, says so in its log and status, and its frames still arrive."""
    import errno

    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    run_dir = tempfile.mkdtemp(prefix="shm-", dir="/tmp")
    with pytest.raises(OSError, match=r"a ring of 2\.0 MB does not fit in /dev/shm \(.* MB free\)"):
        FrameRing(segment_name(run_dir, "frames"), 2, (1 << 20) - 64)
    assert segments(run_dir) == []  # nothing left behind

    class Source_:
        inputs, outputs = (), ("frames",)

        def step(self, now_ns: int, msg: Received | None) -> list[Outgoing]:
            img = np.full((24, 32, 3), 3, np.uint8)
            return [Outgoing("frames", header_for(img), Source("c", 0, now_ns), img)]

        def next_wakeup_ns(self, now_ns: int) -> int:
            return now_ns

        def counters(self) -> dict:
            return {}

    ctx = zmq.Context()
    loop = NodeLoop(NodeContext("cam", run_dir, shm_slots=2, shm_slot_bytes=1 << 20), Source_(), ctx)
    assert loop.pubs["frames"].ring is None and segments(run_dir) == []
    assert loop.status().counters["shm_unavailable"] == "frames"
    sub = Subscriber(ctx, {"frames": schema.endpoint("frames", run_dir)}, keep_newest=False)
    got: list[Received] = []
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        loop.run_once(10)
        got += sub.poll(10)
    assert got and got[0].envelope.payload.shm is None and int(got[0].pixels[0, 0, 0]) == 3
    loop.close()
    sub.close()
    ctx.term()


def test_kill_9_of_a_producer_leaves_no_shared_memory(small_drive: Path, fast_card: str, run_dir: str) -> None:
    external = next_external()
    spec = replace(
        pipeline_spec(small_drive, fast_card, external, "replay.rate=1", "replay.loop=true"),
        shm=ShmConfig(slots=4, slot_mb=2),
    )
    with start_pipeline(spec, run_dir, external) as p:
        p.wait_status("preprocess", lambda st: st.frames_out >= 5, 60)
        before = segments(run_dir)
        assert len(before) == 2  # frames (replay) and frames.rect (preprocess)
        pid = p.pid("replay")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and p.restarts("replay") < 1:
            time.sleep(0.1)
        p.wait_status("preprocess", lambda st: st.frames_out >= 20, 60)  # frames flow again
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(segments(run_dir)) != 2:
            time.sleep(0.2)
        after = segments(run_dir)
        assert len(after) == 2 and not any(name.endswith(f"-{pid}") for name in after), (before, after)
    assert segments(run_dir) == []


def test_a_logic_that_finds_its_frame_overwritten_has_it_counted_dropped_not_as_an_error() -> None:
    """A logic that checks its frames itself (the segmenter, once its network input is made)
    raises FrameOverwritten: the node counts a dropped, torn frame, no error, nothing sent."""
    from perception.node.loop import FrameOverwritten

    run_dir = tempfile.mkdtemp(prefix="shm-", dir="/tmp")
    ctx = zmq.Context()

    class Checks:
        inputs, outputs = ("frames",), ("frames.rect",)

        def step(self, now_ns: int, msg: Received | None) -> list[Outgoing]:
            raise FrameOverwritten("lapped")

        def next_wakeup_ns(self, now_ns: int) -> None:
            return None

        def counters(self) -> dict:
            return {}

    loop = NodeLoop(
        NodeContext("checks", run_dir), Checks(), ctx, Capabilities(frame_views=True, checks_frame_views=True)
    )
    assert loop.sub is not None and loop.sub.shm_views
    img = np.zeros((4, 4, 3), np.uint8)
    loop.stats.frames_in += 1  # as run_once counts it before the step
    loop._step(Received(Envelope("frames", 0, 0, Source("c", 0, 0), header_for(img)), img, unchanged=lambda: True))
    assert (loop.stats.errors, loop.stats.frames_in, loop.stats.frames_out) == (0, 0, 0)
    assert loop.sub.dropped == 1 and loop.sub.shm.torn == 1
    loop.close()
    ctx.term()


def _mapped(name: str) -> bool:
    with open("/proc/self/maps") as f:
        return name in f.read()


def test_a_reader_lets_go_of_a_restarted_producers_ring_and_never_reads_an_old_one_of_its_name() -> None:
    """A restarted producer's ring has a new name (its pid); the reader unmaps the old one,
    whose memory would stay taken while mapped, when it maps the new one. A producer that got
    an old one's pid makes a ring of the old name: the reader finds its frames, not the old ones."""
    run_dir = tempfile.mkdtemp(prefix="shm-", dir="/tmp")
    img = np.zeros((8, 8, 3), np.uint8)
    header = header_for(img)
    reader = ShmReader()

    def frame(ring: FrameRing, value: int) -> int:
        img[:] = value
        got = reader.image(ring.write(img), header, lambda b: b.reshape(img.shape))  # type: ignore[arg-type]
        assert got is not None
        return int(got[0][0, 0, 0])

    old = FrameRing(segment_name(run_dir, "frames", pid=2**22 + 1), 2, img.nbytes)
    assert frame(old, 7) == 7
    old.close()  # the producer is gone; the reader still maps its segment
    assert _mapped(old.name)
    new = FrameRing(segment_name(run_dir, "frames", pid=2**22 + 2), 2, img.nbytes)
    assert frame(new, 9) == 9
    gc.collect()
    assert not _mapped(old.name) and _mapped(new.name)
    # a producer of the same pid, while the reader maps the ring of the one before
    for k in range(3):
        assert frame(new, 10 + k) == 10 + k
    new.close()
    again = FrameRing(new.name, 2, img.nbytes)
    assert [frame(again, 20 + k) for k in range(3)] == [20, 21, 22] and reader.torn == 0
    again.close()
    reader.close()

"""Frames in shared memory: a reader slower than the ring never gets a torn frame (the
generation check drops it, counted), and kill -9 of a producer leaves no shared memory
behind after its restart or after the run."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import zmq

from perception.bus import schema
from perception.bus.pubsub import Publisher, Subscriber, header_for
from perception.bus.schema import Envelope, Source
from perception.bus.shm_ring import FrameRing, ShmConfig, ShmReader, segment_name, segments

from .conftest import next_external, pipeline_spec, start_pipeline


def test_a_slow_reader_never_gets_a_torn_or_wrong_frame() -> None:
    run_dir = tempfile.mkdtemp(prefix="shm-", dir="/tmp")
    ctx = zmq.Context()
    ring = FrameRing(segment_name(run_dir, "frames"), 2, 1 << 21)
    pub = Publisher(ctx, schema.endpoint("frames", run_dir), ring=ring, hwm=0)
    sub = Subscriber(ctx, {"frames": schema.endpoint("frames", run_dir)}, keep_newest=False)
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
    got = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not stop.is_set() or len(got) + sub.dropped < n):
        for m in sub.poll(50):
            px = m.pixels
            assert px is not None and px.shape == (480, 640, 3)
            value = m.envelope.seq % 251
            assert px.min() == px.max() == value, f"frame {m.envelope.seq} is torn or another frame's"
            got.append(m.envelope.seq)
            time.sleep(0.002)  # a slow consumer
    writer.join()
    assert len(got) + sub.dropped == n  # every frame delivered whole or counted as dropped
    assert sub.shm.torn > 0 and sub.dropped >= sub.shm.torn  # the ring was overrun, and it was noticed
    pub.close()
    sub.close()
    ctx.term()
    assert segments(run_dir) == []


def test_a_frame_too_large_for_a_slot_goes_over_the_socket() -> None:
    run_dir = tempfile.mkdtemp(prefix="shm-", dir="/tmp")
    ctx = zmq.Context()
    pub = Publisher(ctx, schema.endpoint("frames", run_dir), ring=FrameRing(segment_name(run_dir, "frames"), 2, 1000),
                    hwm=0)
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
    pub.close()
    sub.close()
    ctx.term()


def test_kill_9_of_a_producer_leaves_no_shared_memory(small_drive: Path, fast_card: str, run_dir: str) -> None:
    external = next_external()
    spec = replace(pipeline_spec(small_drive, fast_card, external, "replay.rate=1", "replay.loop=true"),
                   shm=ShmConfig(slots=4, slot_mb=2))
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

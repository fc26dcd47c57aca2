"""Overload and slow subscribers: latency stays bounded, memory flat, every drop counted,
and a stuck external subscriber does not slow the pipeline."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from reliability.conftest import Pipeline, next_external, pipeline_spec, start_pipeline

from perception.bus import schema
from perception.bus.pubsub import DEFAULT_HWM, Subscriber
from perception.bus.schema import Status

pytestmark = pytest.mark.slow


class _Collector:
    """Every ``topic`` message of a run (``detections`` by default; ``endpoint``: the publisher's
    external one instead of the bus), from its start, on a thread."""

    def __init__(self, run_dir: str, topic: str = "detections", endpoint: str | None = None) -> None:
        self.ctx = zmq.Context()
        self.sub = Subscriber(
            self.ctx, {topic: endpoint or schema.endpoint(topic, run_dir)}, keep_newest=False, hwm=100000
        )
        self.out: list = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.out.extend(self.sub.poll(50))
        self.sub.close()

    def close(self) -> list:
        self.stop.set()
        self.thread.join()
        self.ctx.term()
        return self.out


def _received_up_to(st: Status, topic: str) -> int:
    """Frames up to the last one received (seq from 0)."""
    return int(st.counters.get(f"last_seq.{topic}", -1)) + 1


def _received_span(st: Status, topic: str) -> int:
    """Frames from the first received to the last: each was received or counted dropped
    (frames before the first went out before the node took one: at start-up on a loaded
    machine the node may connect, or take its first frame, after its sender's first frame)."""
    return _received_up_to(st, topic) - int(st.counters.get(f"first_seq.{topic}", 0))


def _drained(p: Pipeline, published: int) -> None:
    p.wait_status("replay", lambda st: st.counters.get("finished") and st.counters.get("published") == published, 60)
    # the last frames may still be on their way or not yet in a heartbeat (two snapshots of
    # the same heartbeat look settled): wait until the accounting closes, then for counters
    # to stop moving; a frame really lost still fails the test's equalities after 30 s
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pre, seg = p.status["preprocess"], p.status["segmenter"]
        if pre.frames_in + pre.dropped == _received_span(
            pre, "frames"
        ) and seg.frames_in + seg.dropped == _received_span(seg, "frames.rect"):
            break
        time.sleep(0.3)
    last = None
    for _ in range(100):  # counters settle once the last frame went through
        now = tuple((p.status[n].frames_in, p.status[n].dropped) for n in ("preprocess", "segmenter"))
        if now == last:
            return
        last = now
        time.sleep(0.6)


def test_overload_latency_bounded_memory_flat_drops_exact(small_drive: Path, fast_card: str, run_dir: str) -> None:
    # phase 1: how fast is the segmenter here, now?
    external = next_external()
    with start_pipeline(
        pipeline_spec(small_drive, fast_card, external, "replay.rate=1", "replay.end_s=1.5"), run_dir, external
    ) as p:
        st = p.wait_status("segmenter", lambda st: st.frames_out >= 10, 60)
        capacity_fps = 1000.0 / max(st.step_p50_ms, 1.0)
    rate = 3 * capacity_fps / 15.0  # the drive is 15 fps: frames arrive at 3x capacity
    repeat = max(2, int(np.ceil(12 * 15 * rate / 45)))  # about 12 s of frames
    budget_ms = 100.0
    external = next_external()
    spec = pipeline_spec(
        small_drive,
        fast_card,
        external,
        f"replay.rate={rate:.3f}",
        f"replay.repeat={repeat}",
        f"segmenter.budget_ms={budget_ms}",
    )
    with start_pipeline(spec, run_dir, external) as p:
        collector = _Collector(run_dir)
        p.wait_status("segmenter", lambda st: st.frames_out >= 3, 60)
        time.sleep(2.0)  # warmed up
        rss_start = p.rss_mb("segmenter")
        _drained(p, 45 * repeat)
        rss_end = p.rss_mb("segmenter")
        dets = collector.close()
        s = {n: p.status[n] for n in ("replay", "preprocess", "segmenter")}
    assert dets, "the segmenter published nothing"
    ages = np.array([d.envelope.payload.frame_age_ms for d in dets])
    worst_run = max(d.envelope.payload.inference_ms for d in dets)
    assert ages.max() <= budget_ms + worst_run, (ages.max(), worst_run)
    assert rss_end - rss_start < max(10.0, 0.05 * rss_start), (rss_start, rss_end)
    published = int(s["replay"].counters["published"])
    assert published == 45 * repeat
    pre_seen = _received_up_to(s["preprocess"], "frames")
    # every frame from the first received to the last: exact
    assert s["preprocess"].frames_in + s["preprocess"].dropped == _received_span(s["preprocess"], "frames")
    # after the last one received, at most a sender's queue (HWM) can be lost unseen, on a machine so
    # loaded that the receiver thread did not run; it is not a frame lost among received ones
    assert 0 <= published - pre_seen <= DEFAULT_HWM, (published, pre_seen)
    seg = s["segmenter"]
    assert seg.frames_in + seg.dropped == _received_span(seg, "frames.rect")
    # what was sent before a node took its first frame is a start-up moment, not a stream of losses
    assert int(seg.counters.get("first_seq.frames.rect", 0)) <= DEFAULT_HWM
    assert int(s["preprocess"].counters.get("first_seq.frames", 0)) <= DEFAULT_HWM
    assert 0 <= s["preprocess"].frames_out - _received_up_to(seg, "frames.rect") <= DEFAULT_HWM
    assert seg.counters["published"] + seg.counters["stale"] == seg.frames_in
    assert seg.dropped + seg.counters["stale"] > 0, "3x overload must drop frames"


def test_stuck_subscriber_does_not_slow_the_pipeline(small_drive: Path, fast_card: str, run_dir: str) -> None:
    """A subscriber that takes everything (frames too) and never reads costs the others nothing:
    a healthy subscriber beside it gets every tracks message the tracker sent, without a gap,
    as it does when no stuck subscriber is there. Compared within each run: how many frames
    the pipeline itself keeps up with depends on the machine's load at the time (25 against 23
    of 45 frames in two runs without any stuck subscriber on a busy machine), so a count
    compared across two runs measures the load, not the subscriber."""
    results = {}
    for stuck in (False, True):
        external = next_external()
        spec = pipeline_spec(
            small_drive,
            fast_card,
            external,
            "replay.rate=1",
            "publisher.hwm=4",
            "publisher.topics=[frames.rect,detections,tracks,status]",
        )
        ctx = zmq.Context()
        # connects before the publisher binds (ZeroMQ retries), so it sees the first tracks too
        healthy = _Collector(run_dir, topic="tracks", endpoint=external)
        with start_pipeline(spec, run_dir, external) as p:
            if stuck:
                dead = ctx.socket(zmq.SUB)
                dead.setsockopt(zmq.RCVHWM, 1)
                dead.setsockopt(zmq.SUBSCRIBE, b"")
                dead.connect(external)
            _drained(p, 45)
            seg_out = p.status["segmenter"].counters["published"]
            p.wait_status("tracker", lambda st, n=seg_out: st.frames_in + st.dropped >= n, 20)
            sent = p.status["tracker"].frames_out
            deadline = time.monotonic() + 10  # the last tracks on their way to the healthy subscriber
            while len(healthy.out) < sent and time.monotonic() < deadline:
                time.sleep(0.05)
            if stuck:
                dead.close(0)
        ctx.term()
        seqs = sorted({m.envelope.seq for m in healthy.close()})
        results[stuck] = (sent, seqs)
    for stuck, (sent, seqs) in results.items():
        assert sent > 0 and seqs, (stuck, sent)
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), f"stuck={stuck}: gaps in what the healthy subscriber got"
        assert len(seqs) >= sent, (stuck, len(seqs), sent)

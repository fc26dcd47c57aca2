"""The node loop: bad input and failing steps are counted and skipped, never fatal."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import zmq

from perception.bus import codec, schema
from perception.bus.pubsub import Subscriber, header_for
from perception.bus.schema import Envelope, Source
from perception.camera.preprocess import PreprocessConfig, PreprocessLogic
from perception.node.loop import NodeContext, NodeLoop


def _frame(seq: int, image: np.ndarray, offset_ns: int = 0) -> list[bytes]:
    """A frame message stamped now (plus ``offset_ns``)."""
    stamp = time.monotonic_ns() + offset_ns
    env = Envelope("frames", seq, stamp, Source("cam0", seq, stamp), header_for(image))
    return [b"frames", codec.encode(env), image.tobytes()]


def _run(loop: NodeLoop, out: Subscriber, want: int, timeout_s: float = 3.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        loop.run_once(max_wait_ms=20)
        got.extend(out.poll(0))
    return got


def test_garbage_on_input_is_counted_and_node_keeps_going(run_dir: str) -> None:
    zctx = zmq.Context()
    camera = zctx.socket(zmq.PUB)
    camera.bind(schema.endpoint("frames", run_dir))
    loop = NodeLoop(
        NodeContext("preprocess", run_dir, deterministic=True),
        PreprocessLogic(PreprocessConfig(width=64, height=64)),
        zctx,
    )
    out = Subscriber(zctx, {"frames.rect": schema.endpoint("frames.rect", run_dir)}, keep_newest=False)
    time.sleep(0.3)
    image = np.full((30, 40, 3), 200, np.uint8)
    camera.send_multipart([b"frames", b"\x92garbage"])
    camera.send_multipart([b"frames", b"\xff" * 100, b"x"])
    camera.send_multipart(_frame(0, image)[:2] + [b"wrong size"])
    camera.send_multipart(_frame(1, image))
    got = _run(loop, out, 1)
    assert len(got) == 1 and got[0].envelope.source.frame_seq == 1
    assert got[0].pixels.shape == (64, 64, 3)
    status = loop.status()
    assert status.errors == 3 and status.last_error
    assert status.frames_in == 1 and status.frames_out == 1
    loop.close()
    out.close()
    camera.close(0)
    zctx.term()


class _Exploding:
    inputs = ("frames",)
    outputs = ("frames.rect",)

    def __init__(self) -> None:
        self.calls = 0

    def next_wakeup_ns(self, now_ns: int) -> None:
        return None

    def step(self, now_ns: int, msg):  # noqa: ANN001
        self.calls += 1
        if msg.envelope.seq % 2 == 0:
            raise RuntimeError(f"model blew up on frame {msg.envelope.seq}")
        return []

    def counters(self) -> dict:
        return {"calls": self.calls}


@contextmanager
def _fed(run_dir: str, offsets_ns: list[int]) -> Iterator[tuple[NodeLoop, _Exploding]]:
    """A deterministic loop of :class:`_Exploding` that has stepped one frame per offset
    (each frame stamped now plus its offset)."""
    zctx = zmq.Context()
    camera = zctx.socket(zmq.PUB)
    camera.bind(schema.endpoint("frames", run_dir))
    logic = _Exploding()
    loop = NodeLoop(NodeContext("x", run_dir, deterministic=True), logic, zctx)
    try:
        time.sleep(0.3)
        image = np.zeros((4, 4, 3), np.uint8)
        for i, offset in enumerate(offsets_ns):
            camera.send_multipart(_frame(i, image, offset))
        deadline = time.monotonic() + 3
        while logic.calls < len(offsets_ns) and time.monotonic() < deadline:
            loop.run_once(max_wait_ms=20)
        yield loop, logic
    finally:
        loop.close()
        camera.close(0)
        zctx.term()


def test_failing_step_is_logged_counted_and_skipped(run_dir: str) -> None:
    with _fed(run_dir, [0, 0, 0, 0]) as (loop, logic):
        st = loop.status()
    assert logic.calls == 4 and st.errors == 2
    assert "model blew up on frame 2" in st.last_error
    # the logic's, the first and last frame seq received, the frames' median transit (send
    # stamp to decoded here), and (deterministic: lossless) how often its sends were held back
    # by a slow reader
    transit = st.counters.pop("transit_p50_ms.frames")
    assert isinstance(transit, float) and 0.0 <= transit < 3000.0
    assert st.counters == {
        "calls": 4,
        "last_seq.frames": 3,
        "first_seq.frames": 0,
        "held.frames.rect": 0,
        "held_ms.frames.rect": 0.0,
    }


def test_status_reports_each_input_topics_transit_from_its_send_stamp(run_dir: str) -> None:
    """``transit_p50_ms.<topic>``: the median of (decoded here - the sender's send stamp);
    frames stamped 40 ms before they were sent show at least that, and a stamp ahead of
    this clock (another machine's) is left out rather than counted as a negative time."""
    with _fed(run_dir, [-40_000_000] * 3 + [10**12]) as (loop, logic):  # the last 1000 s ahead
        assert logic.calls == 4
        assert len(loop.stats.transit_ms["frames"]) == 3
        assert 40.0 <= loop.status().counters["transit_p50_ms.frames"] < 1000.0


def test_numpy_counters_do_not_break_the_heartbeat(run_dir: str) -> None:
    class NumpyCounters(_Exploding):
        def counters(self) -> dict:
            import numpy as np

            return {"x": np.float64(1.5), "n": np.int64(3), "odd": (1, 2)}

    zctx = zmq.Context()
    loop = NodeLoop(NodeContext("x", run_dir), NumpyCounters(), zctx)
    st = loop.status()
    assert st.counters == {"x": 1.5, "n": 3, "odd": "(1, 2)"}
    codec.encode(schema.Envelope("status", 0, 0, None, st))
    loop.close()
    zctx.term()


class _Burst:
    """A source that has a frame due at every wake-up (a replay at ``--max``)."""

    inputs: tuple[str, ...] = ()
    outputs = ("frames",)

    def __init__(self) -> None:
        self.sent = 0
        self.image = np.zeros((240, 320, 3), np.uint8)

    def next_wakeup_ns(self, now_ns: int) -> int:
        return now_ns

    def step(self, now_ns: int, msg):  # noqa: ANN001
        from perception.node.loop import Outgoing

        self.sent += 1
        return [Outgoing("frames", header_for(self.image), Source("cam0", self.sent - 1, now_ns), self.image)]

    def counters(self) -> dict:
        return {"sent": self.sent}


def test_deterministic_source_is_held_back_by_a_stalled_reader_and_keeps_heart_beating(run_dir: str) -> None:
    """In a deterministic run a source that is always due runs only a few frames ahead of a
    preprocess node that stopped stepping (instead of queueing the whole drive into its
    memory), keeps sending heartbeats while it waits, and the reader then gets every frame."""
    zctx = zmq.Context()
    ctx = NodeContext("replay", run_dir, deterministic=True)
    status = zctx.socket(zmq.SUB)  # where the supervisor takes heartbeats in
    status.setsockopt(zmq.SUBSCRIBE, b"")
    status.bind(schema.STATUS_IN_ENDPOINT.format(run_dir=run_dir))
    source = NodeLoop(ctx, _Burst(), zctx)
    reader = NodeLoop(
        NodeContext("preprocess", run_dir, deterministic=True),
        PreprocessLogic(PreprocessConfig(width=64, height=64)),
        zctx,
    )
    time.sleep(0.3)
    status.poll(0)  # a bound SUB attaches a new peer (and sends it the subscription) only when used
    time.sleep(0.1)
    stop_at = time.monotonic() + 1.5
    # the node is told to stop while its send is held back (as the supervisor's SIGTERM does)
    threading.Timer(1.5, lambda: setattr(source, "running", False)).start()
    while source.running:
        source.run_once(max_wait_ms=0)
    assert time.monotonic() >= stop_at - 0.1
    st = source.status()
    assert st.counters["held.frames"] >= 1 and st.counters["held_ms.frames"] > 1000
    assert 2 <= st.frames_out < 40, "the source ran ahead of its stalled reader without a limit"
    beats = 0
    while status.poll(100):
        status.recv_multipart()
        beats += 1
    assert beats >= 3, "no heartbeats while held back"  # 2 Hz for 1.5 s
    deadline = time.monotonic() + 5
    while reader.stats.frames_in < st.frames_out and time.monotonic() < deadline:
        reader.run_once(max_wait_ms=20)
    assert reader.stats.frames_in == st.frames_out and reader.sub.dropped == 0
    reader.close()
    source.close()
    status.close(0)
    zctx.term()

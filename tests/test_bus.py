"""Transport behaviour: zero-copy frames, keep-newest vs deterministic, drop accounting,
bad input counted and skipped, slow subscribers never slow the publisher."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from perception.bus import codec, schema
from perception.bus.pubsub import Publisher, Subscriber, frame_pixels, header_for
from perception.bus.schema import Envelope, FrameHeader, MalformedMessage, Source


def _frame_env(seq: int, image: np.ndarray) -> Envelope:
    return Envelope("frames", seq, time.monotonic_ns(), Source("cam0", seq, time.monotonic_ns()), header_for(image))


def _pair(run_dir: str, keep_newest: bool, hwm: int = 4) -> tuple[zmq.Context, Publisher, Subscriber]:
    ctx = zmq.Context()
    pub = Publisher(ctx, schema.endpoint("frames", run_dir), hwm=0 if not keep_newest else hwm)
    sub = Subscriber(ctx, {"frames": schema.endpoint("frames", run_dir)}, keep_newest=keep_newest, hwm=hwm)
    time.sleep(0.2)  # let the subscription propagate
    return ctx, pub, sub


def _drain(sub: Subscriber, want: int, timeout_s: float = 3.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got.extend(sub.poll(50))
    return got


def test_frame_round_trip_preserves_pixels(run_dir: str) -> None:
    ctx, pub, sub = _pair(run_dir, keep_newest=False)
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    pub.send(_frame_env(0, image), image)
    [msg] = _drain(sub, 1)
    assert np.array_equal(msg.pixels, image)
    assert not msg.pixels.flags.owndata and not msg.pixels.flags.writeable  # a view, not a copy
    assert msg.envelope.source.frame_seq == 0
    sub.close()
    pub.close()
    ctx.term()


def test_strided_frames_are_viewed_correctly() -> None:
    padded = np.zeros((10, 16, 3), np.uint8)
    padded[:, :12] = 7
    header = FrameHeader(width=12, height=10, encoding="bgr8", stride=16 * 3)
    view = frame_pixels(header, padded.tobytes())
    assert view.shape == (10, 12, 3) and (view == 7).all()
    with pytest.raises(MalformedMessage, match="header says"):
        frame_pixels(header, padded.tobytes()[:-1])
    with pytest.raises(MalformedMessage, match="stride"):
        frame_pixels(FrameHeader(width=20, height=10, encoding="bgr8", stride=16), b"\0" * 160)


def test_keep_newest_drops_and_counts(run_dir: str) -> None:
    ctx, pub, sub = _pair(run_dir, keep_newest=True, hwm=1000)
    image = np.zeros((8, 8, 3), np.uint8)
    pub.send(_frame_env(0, image), image)
    assert [m.envelope.seq for m in _drain(sub, 1)] == [0]
    for i in range(1, 11):
        pub.send(_frame_env(i, image), image)
    time.sleep(0.3)
    msgs = sub.poll(100)
    assert [m.envelope.seq for m in msgs] == [10]
    assert sub.dropped == 9
    sub.close()
    pub.close()
    ctx.term()


def test_deterministic_keeps_every_message_in_order(run_dir: str) -> None:
    ctx, pub, sub = _pair(run_dir, keep_newest=False)
    image = np.zeros((8, 8, 3), np.uint8)
    for i in range(50):
        pub.send(_frame_env(i, image), image)
    msgs = _drain(sub, 50)
    assert [m.envelope.seq for m in msgs] == list(range(50))
    assert sub.dropped == 0
    sub.close()
    pub.close()
    ctx.term()


def test_seq_gaps_count_as_dropped(run_dir: str) -> None:
    ctx, pub, sub = _pair(run_dir, keep_newest=False)
    image = np.zeros((8, 8, 3), np.uint8)
    for seq in (0, 1, 5, 6, 0, 1):  # 3 lost between 1 and 5; then the sender restarted
        pub.send(_frame_env(seq, image), image)
    msgs = _drain(sub, 6)
    assert len(msgs) == 6 and sub.dropped == 3
    sub.close()
    pub.close()
    ctx.term()


def test_garbage_is_counted_and_skipped(run_dir: str) -> None:
    ctx = zmq.Context()
    raw = ctx.socket(zmq.PUB)
    raw.bind(schema.endpoint("frames", run_dir))
    sub = Subscriber(ctx, {"frames": schema.endpoint("frames", run_dir)}, keep_newest=False)
    time.sleep(0.2)
    image = np.zeros((8, 8, 3), np.uint8)
    raw.send_multipart([b"frames", b"\xc1not msgpack", b"xx"])
    raw.send_multipart([b"frames", codec.encode(_frame_env(0, image))])  # pixels missing
    raw.send_multipart([b"frames", codec.encode(_frame_env(1, image)), b"short"])
    raw.send_multipart([b"frames", codec.encode(_frame_env(2, image)), image.tobytes()])
    msgs = _drain(sub, 1)
    assert [m.envelope.seq for m in msgs] == [2]
    assert sub.errors == 3 and "bytes" in sub.last_error
    sub.close()
    raw.close(0)
    ctx.term()


def test_slow_subscriber_does_not_block_publisher(run_dir: str) -> None:
    """A subscriber that never reads must not hold the publisher back: every send returns
    and a healthy subscriber beside it still gets the newest frame."""
    ctx, pub, sub = _pair(run_dir, keep_newest=True, hwm=4)
    stuck = ctx.socket(zmq.SUB)
    stuck.setsockopt(zmq.RCVHWM, 1)
    stuck.setsockopt(zmq.SUBSCRIBE, b"")
    stuck.connect(schema.endpoint("frames", run_dir))
    time.sleep(0.2)
    image = np.zeros((480, 640, 3), np.uint8)
    n = 300
    for i in range(n):
        pub.send(_frame_env(i, image), image)
        time.sleep(0.002)  # a fast camera (500 fps), not a burst
    time.sleep(0.3)
    msgs = _drain(sub, 1, 1.0)
    assert msgs and msgs[-1].envelope.seq == n - 1, "the newest frame must reach the healthy subscriber"
    assert stuck.poll(0), "the stuck subscriber still has its (bounded) queue"
    stuck.close(0)
    sub.close()
    pub.close()
    ctx.term()


def test_lossless_publisher_is_held_back_by_a_slow_reader_and_loses_nothing(run_dir: str) -> None:
    """Deterministic runs: a reader that stops reading holds a lossless publisher back after a
    bounded backlog (its heartbeat callback keeps being called while it waits) instead of
    queueing without a limit or dropping; once it reads again it gets every message, in order."""
    ctx = zmq.Context()
    held_calls = []
    pub = Publisher(
        ctx,
        schema.endpoint("frames", run_dir),
        hwm=2,
        lossless=True,
        on_held=lambda: held_calls.append(time.monotonic()) or len(held_calls) < 3,
    )
    sub = Subscriber(ctx, {"frames": schema.endpoint("frames", run_dir)}, keep_newest=False, backlog=2)
    time.sleep(0.2)
    image = np.zeros((240, 320, 3), np.uint8)  # 230 kB: a few fill the kernel's socket buffer
    sent = 0
    t0 = time.monotonic()
    while pub.send(_frame_env(sent, image), image):
        sent += 1
        assert sent < 100, "the publisher was never held back: its reader's queue has no limit"
    waited = time.monotonic() - t0
    assert 2 <= sent < 40  # both queues (2 + 2) and the socket buffer between them, no more
    assert pub.held >= 1 and len(held_calls) == 3 and waited >= 0.4  # its last send: 3 turns of LOSSLESS_WAIT_MS
    pub.on_held = lambda: True
    got = _drain(sub, sent)
    assert [m.envelope.seq for m in got] == list(range(sent)) and sub.dropped == 0
    for i in range(sent, sent + 20):  # the reader keeps up: nothing is held, nothing lost
        assert pub.send(_frame_env(i, image), image)
        got += _drain(sub, 1)
    got += _drain(sub, sent + 20 - len(got))
    assert [m.envelope.seq for m in got] == list(range(sent + 20)) and sub.dropped == 0
    sub.close()
    pub.close()
    ctx.term()

"""Doorbells: the envelopes of frames in shared memory go straight to local subscribers over a
Unix socket, each frame delivered once, in order, whichever way it travels; subscribers
without a bell, or whose producer restarted, still get everything over ZeroMQ."""

from __future__ import annotations

import tempfile
import time

import numpy as np
import zmq

from perception.bus import codec, schema
from perception.bus.doorbell import DoorbellClient, DoorbellServer, bell_path, marker
from perception.bus.pubsub import Publisher, Received, Subscriber, header_for
from perception.bus.schema import Envelope, Source
from perception.bus.shm_ring import FrameRing, segment_name

SMALL = (48, 64, 3)  # fits the ring's slots
LARGE = (96, 128, 3)  # does not: its pixels go over ZeroMQ


def _run_dir() -> str:
    return tempfile.mkdtemp(prefix="bell-", dir="/tmp")


def _publisher(ctx: zmq.Context, run_dir: str, pid: int | None = None) -> Publisher:
    ring = FrameRing(segment_name(run_dir, "frames", pid), 64, int(np.prod(SMALL)))
    return Publisher(ctx, schema.endpoint("frames", run_dir), ring=ring, hwm=0)


def _send(pub: Publisher, seq: int, shape: tuple[int, int, int] = SMALL) -> None:
    img = np.full(shape, seq % 251, np.uint8)
    pub.send(Envelope("frames", seq, time.monotonic_ns(), Source("c", seq, 0), header_for(img)), img)


def _collect(sub: Subscriber, until: int, timeout_s: float = 20.0) -> list[Received]:
    """Poll until the frame with ``seq == until`` arrived (or the timeout)."""
    got: list[Received] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not any(m.envelope.seq == until for m in got):
        got += sub.poll(50)
    return got


def _ready(pub: Publisher, sub: Subscriber, start: int) -> int:
    """Probe frames until the subscriber gets one (ZeroMQ's slow joiner); the next seq."""
    seq = start
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _send(pub, seq, LARGE)  # over ZeroMQ for everyone, so both kinds of subscriber see it
        seq += 1
        if sub.poll(50):
            time.sleep(0.2)
            sub.poll(0)
            return seq
    raise AssertionError("the subscriber never connected")


def test_ring_frames_come_by_the_bell_once_and_large_ones_over_zeromq_in_order() -> None:
    run_dir = _run_dir()
    ctx = zmq.Context()
    pub = _publisher(ctx, run_dir)
    sub = Subscriber(ctx, {"frames": schema.endpoint("frames", run_dir)}, keep_newest=False)
    plain = Subscriber(ctx, {"frames": schema.endpoint("frames", run_dir)}, keep_newest=False, doorbells=False)
    assert sub.bells["frames"].reader.client.connected and not plain.bells
    start = _ready(pub, sub, 0)
    _ready(pub, plain, start)
    start += 100
    shapes = [LARGE if k % 5 == 0 else SMALL for k in range(40)]
    for k, shape in enumerate(shapes):
        _send(pub, start + k, shape)
        time.sleep(0.005)  # so ZeroMQ's frames and the bell's do not race past each other
    last = start + len(shapes) - 1
    for s in (sub, plain):
        got = [m for m in _collect(s, last) if m.envelope.seq >= start]
        assert [m.envelope.seq for m in got] == list(range(start, last + 1))  # each once, in order
        for m in got:
            assert m.pixels is not None and m.pixels.shape == shapes[m.envelope.seq - start]
            assert int(m.pixels.max()) == int(m.pixels.min()) == m.envelope.seq % 251
            assert (m.envelope.payload.shm is not None) == (m.pixels.shape == SMALL)
    assert pub.bell is not None and len(pub.bell.peers) == 1  # the plain subscriber has none
    for s in (sub, plain):
        s.close()
    pub.close()
    ctx.term()


def test_a_subscriber_started_first_and_one_whose_producer_restarted_find_its_bell() -> None:
    run_dir = _run_dir()
    ctx = zmq.Context()
    sub = Subscriber(ctx, {"frames": schema.endpoint("frames", run_dir)}, keep_newest=False)
    bell = sub.bells["frames"].reader
    assert not bell.client.connected  # no producer yet
    seq = 0
    for generation in range(2):
        pub = _publisher(ctx, run_dir, pid=1000 + generation)
        deadline = time.monotonic() + 10
        while not bell.client.connected and time.monotonic() < deadline:
            sub.poll(50)  # retried every half second
        assert bell.client.connected, f"producer {generation}'s bell was not found"
        seq = _ready(pub, sub, seq)
        start = seq
        for k in range(10):
            _send(pub, start + k)
        got = [m for m in _collect(sub, start + 9) if m.envelope.seq >= start]
        assert [m.envelope.seq for m in got] == list(range(start, start + 10))
        assert all(m.envelope.payload.shm is not None for m in got)
        pub.close()  # the producer goes away: the bell ends, the subscriber falls back
        deadline = time.monotonic() + 5
        while bell.client.connected and time.monotonic() < deadline:
            sub.poll(50)
        assert not bell.client.connected
        seq = 0  # a restarted producer counts from 0 again
    sub.close()
    ctx.term()


def test_keep_newest_decodes_only_the_newest_and_counts_the_rest() -> None:
    run_dir = _run_dir()
    ctx = zmq.Context()
    pub = _publisher(ctx, run_dir)
    sub = Subscriber(ctx, {"frames": schema.endpoint("frames", run_dir)}, keep_newest=True)
    assert sub.bells["frames"].reader.client.connected
    start = _ready(pub, sub, 0)
    dropped = sub.dropped
    for k in range(6):  # all waiting before the next poll
        _send(pub, start + k)
    time.sleep(0.2)
    got = sub.poll(100)
    assert [m.envelope.seq for m in got] == [start + 5]
    assert sub.dropped - dropped == 5
    # the newest does not fit the ring: the bell announces it, its pixels come over ZeroMQ
    for k in range(6, 9):
        _send(pub, start + k, SMALL if k < 8 else LARGE)
    time.sleep(0.2)
    got = sub.poll(100)
    assert [m.envelope.seq for m in got] == [start + 8]
    assert got[0].pixels is not None and got[0].pixels.shape == LARGE
    assert int(got[0].pixels.max()) == (start + 8) % 251
    assert sub.dropped - dropped == 7
    sub.close()
    pub.close()
    ctx.term()


def test_a_full_reader_never_blocks_the_producer_and_a_gone_one_is_forgotten() -> None:
    path = f"{_run_dir()}/x.bell"
    server = DoorbellServer(path)
    stuck = DoorbellClient(path)
    assert stuck.try_connect()
    data = b"x" * 1000
    t0 = time.monotonic()
    reached = [server.ring(data) for _ in range(5000)]  # nobody reads
    assert time.monotonic() - t0 < 5
    assert reached[0] == 1 and reached[-1] == 0 and server.full > 0
    envelopes, alive = stuck.receive()
    assert alive and envelopes and all(e == data for e in envelopes)
    stuck.close()
    assert server.ring(data) == 0 and server.peers == []
    server.close()
    assert not DoorbellClient(path).try_connect()  # the bell is gone with its producer


def test_bad_bell_messages_are_counted_and_a_frame_whose_pixels_never_come_is_dropped() -> None:
    run_dir = _run_dir()
    ctx = zmq.Context()
    path = bell_path(schema.endpoint("frames", run_dir))
    assert path is not None
    server = DoorbellServer(path)  # a producer that rings, and sends nothing over ZeroMQ
    sub = Subscriber(ctx, {"frames": schema.endpoint("frames", run_dir)}, keep_newest=False)
    assert sub.bells["frames"].reader.client.connected
    img = np.zeros(SMALL, np.uint8)
    not_a_frame = codec.encode(Envelope("status", 1, 0, None, schema.Status("n", 1)))
    no_pixels = codec.encode(Envelope("frames", 2, 0, None, header_for(img)))  # nor a slot
    for data in (b"\x93garbage", not_a_frame, b"\x00short", no_pixels):
        server.ring(data)
    deadline = time.monotonic() + 5
    while sub.errors < 4 and time.monotonic() < deadline:
        assert sub.poll(50) == []
    assert sub.errors == 4 and "neither a shared-memory slot nor pixels" in sub.last_error
    # marked as coming over ZeroMQ, which never brings them
    for seq in (10, 11):
        server.ring(marker(seq))
    t0 = time.monotonic()
    while sub.dropped < 2 and time.monotonic() < t0 + 5:
        assert sub.poll(50) == []
    assert sub.dropped == 2 and sub.errors == 4
    assert time.monotonic() - t0 < 1.0  # each waits PIXELS_WAIT_S, not the poll's timeout
    sub.close()
    server.close()
    ctx.term()


def test_bell_paths_only_for_local_endpoints() -> None:
    assert bell_path("ipc:///tmp/run/frames.sock") == "/tmp/run/frames.sock.bell"
    assert bell_path("tcp://127.0.0.1:5555") is None
    # a path that is not a bell (a plain file) is not connected to
    p = f"{_run_dir()}/plain.bell"
    open(p, "w").close()
    assert not DoorbellClient(p).try_connect()


def test_other_topics_come_by_the_bell_to_live_readers_and_over_zeromq_to_deterministic_ones(monkeypatch) -> None:
    from perception.bus import doorbell

    monkeypatch.setattr(doorbell, "MAX_MESSAGE", 400)  # so that the larger messages are marked
    run_dir = _run_dir()
    ctx = zmq.Context()
    address = schema.endpoint("detections", run_dir)
    pub = Publisher(ctx, address, hwm=0, doorbell=True)
    live = Subscriber(ctx, {"detections": address}, keep_newest=True, hwm=1000)
    every = Subscriber(ctx, {"detections": address}, keep_newest=False)
    assert live.bells["detections"].reader.client.connected and not every.bells

    def det(seq: int, n: int) -> Envelope:
        inst = tuple(schema.Instance(0, 0.5, (0, 0, 1 + k, 1 + k)) for k in range(n))
        return Envelope("detections", seq, time.monotonic_ns(), Source("c", seq, 0), schema.Detections("m", 8, 8, inst))

    seq, deadline = 0, time.monotonic() + 20
    while not (live.poll(20) and every.poll(20)) and time.monotonic() < deadline:  # slow joiners
        pub.send(det(seq, 1))
        seq += 1
    time.sleep(0.2)
    live.poll(0), every.poll(0)
    start = seq + 10
    sizes = [1 if k % 3 else 30 for k in range(30)]  # every third too large for the bell
    assert not doorbell.DoorbellServer.fits(codec.encode(det(0, 30)))
    for k, n in enumerate(sizes):
        pub.send(det(start + k, n))
    for s in (live, every):
        got = [m for m in _collect(s, start + 29) if m.envelope.seq >= start]
        assert [m.envelope.seq for m in got] == list(range(start, start + 30))  # each once, in order
        assert [len(m.envelope.payload.instances) for m in got] == sizes
    assert len(pub.bell.peers) == 1
    for s in (live, every):
        s.close()
    pub.close()
    ctx.term()


def test_stages_are_rung_before_observers_whatever_order_they_came_in() -> None:
    import socket

    from perception.bus.doorbell import OBSERVER, STAGE

    path = f"{_run_dir()}/x.bell"
    server = DoorbellServer(path)
    observer, stage = DoorbellClient(path), DoorbellClient(path, stage=True)
    assert observer.try_connect() and stage.try_connect()  # the observer first
    late = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # connected, hello not sent yet
    late.connect(path)
    assert server.ring(b"one") == 3
    assert server.ranks() == [STAGE, OBSERVER, OBSERVER]  # the late one rung as an observer
    late.send(b"h\x00")  # its hello: a stage
    assert server.ring(b"two") == 3
    assert server.ranks() == [STAGE, STAGE, OBSERVER]
    for reader in (observer, stage):
        got, alive = reader.receive()
        assert alive and got == [b"one", b"two"]
    assert [late.recv(16), late.recv(16)] == [b"one", b"two"]
    stage.close()  # a stage that went away is forgotten, the order of the rest kept
    assert server.ring(b"three") == 2 and server.ranks() == [STAGE, OBSERVER]
    late.close()
    observer.close()
    server.close()

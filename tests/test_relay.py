"""The external publisher relays messages as the bytes they came in: envelope checked,
payload (masks) neither decoded nor encoded again; the external subscriber decodes and
checks it."""

from __future__ import annotations

import socket
import tempfile
import time

import msgspec
import numpy as np
import pycocotools.mask as mask_util
import pytest
import zmq

from perception.bus import codec, schema
from perception.bus.pubsub import Publisher, Received, Subscriber, header_for
from perception.bus.schema import (
    Envelope,
    MalformedMessage,
    Rle,
    Source,
    WrongSchemaVersion,
)
from perception.outputs.publisher import PublisherConfig, PublisherLogic


def _mask(x: int, y: int, h: int = 48, w: int = 64) -> Rle:
    m = np.zeros((h, w), np.uint8, order="F")
    m[y : y + 10, x : x + 12] = 1
    rle = mask_util.encode(m)
    return Rle(size=(h, w), counts=rle["counts"].decode())


def _detections(seq: int, n: int = 3) -> Envelope:
    inst = tuple(
        schema.Instance(k % 3, 0.4 + 0.1 * k, (2.0 * k, 1.0, 2.0 * k + 12, 11.0), _mask(2 * k, 1)) for k in range(n)
    )
    return Envelope(
        "detections",
        seq,
        time.monotonic_ns(),
        Source("cam0", seq, 123 + seq),
        schema.Detections("yolact_fast", 64, 48, inst, inference_ms=25.0),
    )


def test_a_relayed_message_goes_out_byte_for_byte_and_decodes_as_sent() -> None:
    env = _detections(7)
    data = codec.encode(env)
    relayed = codec.decode_relay(data, "detections")
    assert isinstance(relayed.payload, msgspec.Raw)  # masks not decoded
    assert (relayed.topic, relayed.seq, relayed.stamp_ns, relayed.source) == (
        env.topic,
        env.seq,
        env.stamp_ns,
        env.source,
    )
    out = codec.encode(relayed)
    assert out == data
    assert codec.decode(out, "detections") == env


def test_the_relay_checks_the_envelope_and_leaves_the_payload_to_the_reader() -> None:
    data = codec.encode(_detections(1))
    with pytest.raises(MalformedMessage, match="expected topic 'tracks'"):
        codec.decode_relay(data, "tracks")
    with pytest.raises(MalformedMessage, match="not a message envelope"):
        codec.decode_relay(b"\xc1garbage", "detections")
    old = msgspec.msgpack.encode(
        {
            "topic": "detections",
            "seq": 1,
            "stamp_ns": 1,
            "source": None,
            "payload": {},
            "schema_version": schema.SCHEMA_VERSION + 1,
        }
    )
    with pytest.raises(WrongSchemaVersion):
        codec.decode_relay(old, "detections")
    # a payload that is no Detections passes the relay and is caught where it is decoded
    bad = msgspec.msgpack.encode(
        {
            "topic": "detections",
            "seq": 2,
            "stamp_ns": 1,
            "source": None,
            "payload": {"model": 5},
            "valid": True,
            "schema_version": schema.SCHEMA_VERSION,
        }
    )
    assert codec.encode(codec.decode_relay(bad, "detections")) == bad
    with pytest.raises(MalformedMessage, match="detections"):
        codec.decode(bad, "detections")


def test_frames_are_decoded_whole_by_the_relay() -> None:
    image = np.zeros((4, 6, 3), np.uint8)
    env = Envelope("frames", 3, 5, Source("cam0", 3, 5), header_for(image))
    got = codec.decode_relay(codec.encode(env), "frames")
    assert got == env and isinstance(got.payload, schema.FrameHeader)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _collect(sub: Subscriber, seqs: set[int], timeout_s: float = 20.0) -> list[Received]:
    got: list[Received] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not seqs <= {m.envelope.seq for m in got}:
        got += sub.poll(50)
    return got


@pytest.mark.parametrize("keep_newest", [True, False], ids=["live-by-the-bell", "deterministic-over-zeromq"])
def test_the_publisher_node_relays_messages_its_external_readers_decode(monkeypatch, keep_newest: bool) -> None:
    from perception.bus import doorbell

    monkeypatch.setattr(doorbell, "MAX_MESSAGE", 700)  # the larger messages marked, and over ZeroMQ
    run_dir = tempfile.mkdtemp(prefix="relay-", dir="/tmp")
    ctx = zmq.Context()
    address = schema.endpoint("detections", run_dir)
    internal = Publisher(ctx, address, hwm=0, doorbell=True)
    relay = Subscriber(ctx, {"detections": address}, keep_newest=keep_newest, hwm=1000, relay=True)
    assert bool(relay.bells) == keep_newest
    bind = f"tcp://127.0.0.1:{_free_port()}"
    logic = PublisherLogic(PublisherConfig(bind=bind, topics=("detections",)), ctx)
    external = Subscriber(ctx, {"detections": bind}, keep_newest=False)
    seq, deadline = 0, time.monotonic() + 20
    while time.monotonic() < deadline:  # ZeroMQ's slow joiners, both links
        internal.send(_detections(seq, 1))
        seq += 1
        for m in relay.poll(20):
            logic.step(0, m)
        if external.poll(20):
            break
    time.sleep(0.2)
    for m in relay.poll(0):
        logic.step(0, m)
    external.poll(0)
    sent = {s: _detections(s, 1 + s % 4) for s in range(seq + 10, seq + 22)}
    assert any(not doorbell.DoorbellServer.fits(codec.encode(e)) for e in sent.values())
    bad = msgspec.msgpack.encode(
        {
            "topic": "detections",
            "seq": seq + 22,
            "stamp_ns": 1,
            "source": None,
            "payload": {"model": 5},
            "valid": True,
            "schema_version": schema.SCHEMA_VERSION,
        }
    )
    for env in sent.values():
        internal.send(env)
    internal.bell.ring(bad)
    internal.sock.send_multipart([b"detections", bad])
    got_relay = _collect(relay, set(sent) | {seq + 22})
    assert all(isinstance(m.envelope.payload, msgspec.Raw) for m in got_relay)
    assert relay.errors == 0  # the payload is not the relay's to check
    for m in got_relay:
        logic.step(0, m)
    got = _collect(external, set(sent))
    time.sleep(0.2)
    got += external.poll(50)
    assert {m.envelope.seq: m.envelope for m in got if m.envelope.seq in sent} == sent
    assert external.errors == 1 and "detections" in external.last_error  # the bad payload, caught there
    for s in (relay, external):
        s.close()
    logic.close()
    internal.close()
    ctx.term()

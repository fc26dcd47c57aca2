"""Contract tests on the wire format."""

from __future__ import annotations

import dataclasses

import msgspec
import numpy as np
import pytest

from perception.bus import codec, schema
from perception.bus.masks import decode_mask, encode_mask
from perception.bus.schema import (
    Detections,
    Envelope,
    FrameHeader,
    GroundTruth,
    GtInstance,
    Instance,
    Letterbox,
    Rle,
    Source,
    Status,
    Track,
    Tracks,
)


def _rle() -> Rle:
    m = np.zeros((24, 32), bool)
    m[5:15, 3:20] = True
    return encode_mask(m)


SAMPLES: dict[str, schema.Payload] = {
    "frames": FrameHeader(width=32, height=24, encoding="bgr8", stride=96),
    "frames.rect": FrameHeader(32, 24, "bgr8", 96, Letterbox(0.5, 0.0, 4.0, 64, 40)),
    "detections": Detections(
        "fast",
        32,
        24,
        (Instance(2, 0.9, (1.0, 2.0, 3.5, 4.0), _rle()), Instance(0, 0.4, (0.0, 0.0, 1.0, 1.0), None)),
        inference_ms=3.2,
        queue_wait_ms=1.0,
        frame_age_ms=9.5,
        policy_reason="fits",
    ),
    "tracks": Tracks(
        32,
        24,
        (Track(7, "confirmed", 2, 0.8, (1.0, 2.0, 3.0, 4.0), _rle(), (3.0, -1.0), 1.5, 12, True, (4.5, -0.2)),),
        epoch=3,
    ),
    "gt": GroundTruth(32, 24, (GtInstance(4, 1, (0.0, 1.0, 2.0, 3.0), _rle(), 0.25, False),)),
    "status": Status("camera", 123, 15.0, 1.0, 2.0, 1, 2, 3, 4, "boom", 9.0, {"a": 1, "b": 0.5, "c": "x", "d": True}),
}


def test_every_topic_has_a_sample() -> None:
    assert set(SAMPLES) == {t.name for t in schema.TOPICS}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip(name: str) -> None:
    env = Envelope(name, 42, 1_000, Source("cam0", 7, 900), SAMPLES[name], valid=False)
    back = codec.decode(codec.encode(env))
    assert back == env
    assert type(back.payload) is type(SAMPLES[name])


def test_endpoints_and_names_unique() -> None:
    names = [t.name for t in schema.TOPICS]
    endpoints = [t.endpoint for t in schema.TOPICS] + [schema.STATUS_IN_ENDPOINT]
    assert len(set(names)) == len(names)
    assert len(set(endpoints)) == len(endpoints)
    for t in schema.TOPICS:
        assert "{run_dir}" in t.endpoint and t.endpoint.startswith("ipc://")


def test_older_schema_version_rejected() -> None:
    env = Envelope("status", 0, 0, None, SAMPLES["status"], schema_version=schema.SCHEMA_VERSION - 1)
    with pytest.raises(schema.WrongSchemaVersion, match="schema_version 0"):
        codec.decode(msgspec.msgpack.encode(env))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x01garbage",
        msgspec.msgpack.encode([1, 2, 3]),
        msgspec.msgpack.encode({"topic": "status"}),
        b"\x81\xa5topic\xa2\x9a\x9a",
    ],
)  # a str that is not UTF-8
def test_garbage_is_malformed(data: bytes) -> None:
    with pytest.raises(schema.MalformedMessage):
        codec.decode(data)


def test_bad_payload_names_the_field() -> None:
    plain = codec.to_plain(Envelope("detections", 0, 0, None, SAMPLES["detections"]))
    plain["payload"]["instances"][0]["class_id"] = "car"
    with pytest.raises(schema.MalformedMessage, match=r"instances\[0\]\.class_id"):
        codec.decode(msgspec.msgpack.encode(plain))


def test_payload_string_that_is_not_utf8_is_malformed() -> None:
    plain = codec.to_plain(Envelope("detections", 0, 0, None, SAMPLES["detections"]))
    plain["payload"]["model"] = "\u00e9t\u00e9"
    data = msgspec.msgpack.encode(plain).replace(
        "\u00e9t\u00e9".encode(), b"\x9a\x9at\x9a\x9a"
    )  # same length, not UTF-8
    with pytest.raises(schema.MalformedMessage, match="payload"):
        codec.decode(data)


def test_unknown_topic_and_wrong_payload_type() -> None:
    plain = codec.to_plain(Envelope("status", 0, 0, None, SAMPLES["status"]))
    plain["topic"] = "nope"
    with pytest.raises(schema.UnknownTopic, match="nope"):
        codec.decode(msgspec.msgpack.encode(plain))
    with pytest.raises(schema.SchemaError, match="carries Tracks"):
        codec.encode(Envelope("tracks", 0, 0, None, SAMPLES["status"]))


def test_oversized_lists_rejected() -> None:
    big = dataclasses.replace(
        SAMPLES["detections"], instances=(Instance(0, 0.5, (0.0, 0.0, 1.0, 1.0)),) * (schema.MAX_INSTANCES + 1)
    )
    data = msgspec.msgpack.encode(Envelope("detections", 0, 0, None, big))
    with pytest.raises(schema.MalformedMessage, match="length"):
        codec.decode(data)


def test_rle_is_pycocotools_compatible() -> None:
    m = np.zeros((24, 32), bool)
    m[5:15, 3:20] = True
    rle = encode_mask(m)
    env = codec.decode(
        codec.encode(Envelope("gt", 0, 0, None, GroundTruth(32, 24, (GtInstance(0, 0, (3, 5, 20, 15), rle),))))
    )
    assert np.array_equal(decode_mask(env.payload.instances[0].mask), m)


def test_a_record_made_without_init_equals_one_made_with_it_and_needs_every_field() -> None:
    from perception.bus import codec
    from perception.bus.records import record
    from perception.bus.schema import Track

    fields = dict(
        track_id=3,
        state="lost",
        class_id=2,
        score=0.8,
        box_xyxy=(1.0, 2.0, 30.0, 40.0),
        mask=None,
        velocity_px_s=(5.0, -1.0),
        age_s=1.5,
        hits=7,
        predicted=True,
        ground_xy_m=(3.0, 0.5),
        ground_above_horizon=False,
    )
    fast = record(Track, **fields)
    assert fast == Track(**fields) and hash(fast) == hash(Track(**fields))  # type: ignore[arg-type]
    assert codec.to_plain(fast) == codec.to_plain(Track(**fields))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs exactly the fields"):
        record(Track, **{k: v for k, v in fields.items() if k != "hits"})
    with pytest.raises(TypeError, match="needs exactly the fields"):
        record(Track, **fields, extra=1)


def test_replaced_equals_dataclasses_replace_and_leaves_the_original() -> None:
    from perception.bus.records import replaced
    from perception.bus.schema import FrameHeader, ShmSlot

    header = FrameHeader(width=64, height=48, encoding="bgr8", stride=192)
    ref = ShmSlot(segment="perception-abc-frames-7", slot=1, generation=4, nbytes=9216, slot_stride=9280)
    fast = replaced(header, shm=ref)
    assert fast == dataclasses.replace(header, shm=ref) and header.shm is None
    assert codec.to_plain(fast) == codec.to_plain(dataclasses.replace(header, shm=ref))
    with pytest.raises(TypeError, match=r"FrameHeader has no field \['shmem'\]"):
        replaced(header, shmem=ref)

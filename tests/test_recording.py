"""The drive format: frames, ground truth and any topic round-trip through MCAP."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader

from perception.bus.masks import encode_mask
from perception.bus.schema import Detections, Envelope, GroundTruth, GtInstance, Instance, Source
from perception.drives.drive_file import DriveError, DriveMeta, DriveReader, DriveWriter


def _gt(mask: np.ndarray) -> GroundTruth:
    return GroundTruth(
        image_width=mask.shape[1],
        image_height=mask.shape[0],
        instances=(
            GtInstance(
                instance_id=3, class_id=2, box_xyxy=(1.0, 2.0, 5.0, 6.0), mask=encode_mask(mask), occlusion=0.25
            ),
        ),
    )


def test_frames_gt_and_topics_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "d.mcap"
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(3)]
    mask = np.zeros((24, 32), bool)
    mask[2:6, 1:5] = True
    meta = DriveMeta(camera_id="c1", width=32, height=24, fps=10.0, generator="test", seed=5)
    with DriveWriter(path, meta) as w:
        for i, img in enumerate(images):
            src = Source("c1", i, 1000 + i * 100)
            w.write_frame(img, src, fmt="png")
            w.write_gt(src, _gt(mask))
            det = Detections(
                model="m",
                image_width=32,
                image_height=24,
                instances=(Instance(class_id=2, score=0.9, box_xyxy=(1, 2, 5, 6), mask=encode_mask(mask)),),
            )
            w.write(Envelope(topic="detections", seq=i, stamp_ns=2000 + i, source=src, payload=det))
    r = DriveReader(path)
    assert replace(r.meta, wall_anchor_ns=0, mono_anchor_ns=0) == meta and r.frame_count == 3
    # MCAP log times on the wall clock (viewers show them as dates), stamps in the messages monotonic
    assert r.meta.mono_anchor_ns == 1000 and abs(r.meta.wall_anchor_ns - time.time_ns()) < 60e9
    with open(path, "rb") as f:
        log_times = [m.log_time for _, _, m in make_reader(f).iter_messages(topics=["frames"])]
    assert log_times == [r.meta.wall_ns(1000 + i * 100) for i in range(3)]
    with open(path, "rb") as f:
        assert [m.name for m in make_reader(f).iter_metadata()] == ["drive"]  # one record, written complete
    assert r.counts == {"frames": 3, "gt": 3, "detections": 3}
    frames = list(r.frames())
    assert [f.source.frame_seq for f in frames] == [0, 1, 2]
    for f, img in zip(frames, images, strict=True):
        assert np.array_equal(f.image, img)  # PNG is lossless
        assert f.gt == _gt(mask)
    dets = list(r.messages("detections"))
    assert [d.seq for d in dets] == [0, 1, 2] and dets[0].payload.instances[0].score == pytest.approx(0.9)


def test_channels_carry_json_schemas(tmp_path: Path) -> None:
    path = tmp_path / "d.mcap"
    with DriveWriter(path, DriveMeta()) as w:
        src = Source("c", 0, 0)
        w.write_frame(np.zeros((8, 8, 3), np.uint8), src)
        w.write_gt(src, GroundTruth(8, 8))
    with open(path, "rb") as f:
        summary = make_reader(f).get_summary()
    assert summary is not None
    for ch in summary.channels.values():
        sch = summary.schemas[ch.schema_id]
        assert ch.message_encoding == "msgpack" and sch.encoding == "jsonschema"
        doc = json.loads(sch.data)
        assert "$defs" in doc or "properties" in doc
    gt_schema = json.loads(
        next(summary.schemas[c.schema_id].data for c in summary.channels.values() if c.topic == "gt")
    )
    assert "GroundTruth" in json.dumps(gt_schema)


def test_jpeg_frames_decode_close_to_the_original(tmp_path: Path) -> None:
    path = tmp_path / "d.mcap"
    yy, xx = np.mgrid[0:32, 0:48]
    img = np.stack([xx * 4, yy * 6, xx + yy + 60], axis=2).astype(np.uint8)  # smooth: JPEG keeps it
    with DriveWriter(path, DriveMeta(), jpeg_quality=95) as w:
        w.write_frame(img, Source("c", 0, 0))
    (f,) = DriveReader(path).frames()
    assert f.record.format == "jpeg" and f.gt is None
    assert np.abs(f.image.astype(int) - img).mean() < 3


def test_bad_files_raise_drive_error_naming_them(tmp_path: Path) -> None:
    with pytest.raises(DriveError, match="no such drive"):
        DriveReader(tmp_path / "missing.mcap")
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"not an mcap file at all" * 10)
    with pytest.raises(DriveError, match="junk.mcap"):
        DriveReader(junk)
    with pytest.raises(Exception, match="write_frame"):
        with DriveWriter(tmp_path / "x.mcap", DriveMeta()) as w:
            w.write(Envelope(topic="frames", seq=0, stamp_ns=0, source=None, payload=None))  # type: ignore[arg-type]

"""The recorder logic, driven directly with received messages (no sockets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perception.bus import codec, schema
from perception.bus.masks import encode_mask
from perception.bus.pubsub import Received, header_for
from perception.bus.schema import Detections, Envelope, GroundTruth, GtInstance, Instance, Source, Status, Track, Tracks
from perception.drives.drive_file import DriveReader
from perception.drives.recorder import RECORDED_TOPICS, RecorderConfig, RecorderLogic, split_path
from perception.drives.replay import ReplayConfig, ReplayLogic
from perception.node.config import ConfigError, build_config
from perception.node.loop import NodeContext, NodeLoop
from perception.system.node_table import NODE_TYPES

W, H = 40, 30
PERIOD_NS = 50_000_000


def _image(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 255, (H, W, 3), dtype=np.uint8)


def _frame(i: int, image: np.ndarray | None = None, encoding: schema.Encoding = "bgr8") -> Received:
    img = _image(i) if image is None else image
    src = Source("cam7", i, 10**9 + i * PERIOD_NS)
    return Received(Envelope("frames", i, src.capture_ns + 1000, src, header_for(img, encoding)), img)


def _messages(i: int) -> list[Received]:
    """One frame's worth of every recorded non-frame topic."""
    src = Source("cam7", i, 10**9 + i * PERIOD_NS)
    mask = np.zeros((H, W), bool)
    mask[i % H :, : 1 + i % W] = True
    rle = encode_mask(mask)
    det = Detections("fast", W, H, (Instance(1, 0.5 + i / 1000, (1.0, 2.0, 9.0, 8.0 + i), rle),), inference_ms=3.5)
    trk = Tracks(W, H, (Track(i + 1, "confirmed", 2, 0.75, (0.0, 1.0, 5.0, 6.0), rle, (1.5, -2.0)),), epoch=1)
    gt = GroundTruth(W, H, (GtInstance(4, 2, (0.0, 0.0, 4.0, 4.0), rle, occlusion=0.5),))
    st = Status("tracker", 123, rate_hz=10.0, counters={"n": i})
    return [
        Received(Envelope("detections", i, src.capture_ns + 2, src, det)),
        Received(Envelope("tracks", i, src.capture_ns + 3, src, trk)),
        Received(Envelope("gt", i, src.capture_ns + 4, src, gt)),
        Received(Envelope("status", i, src.capture_ns + 5, None, st)),
    ]


def _record(cfg: RecorderConfig, n: int, with_messages: bool = True) -> tuple[RecorderLogic, list[Received]]:
    logic = RecorderLogic(cfg)
    sent: list[Received] = []
    for i in range(n):
        for msg in [_frame(i)] + (_messages(i) if with_messages else []):
            logic.step(msg.envelope.stamp_ns, msg)
            sent.append(msg)
    logic.close()
    return logic, sent


def test_every_topic_round_trips_byte_identical(tmp_path: Path) -> None:
    cfg = RecorderConfig(out=str(tmp_path / "r.mcap"), image_format="png")
    logic, sent = _record(cfg, 6)
    (path,) = logic.files
    r = DriveReader(path)
    assert r.counts == {t: 6 for t in RECORDED_TOPICS}
    assert r.meta.generator == "recorder" and (r.meta.camera_id, r.meta.width, r.meta.height) == ("cam7", W, H)
    assert r.meta.fps == pytest.approx(1e9 / PERIOD_NS)
    for topic in RECORDED_TOPICS:
        if topic == "frames":
            continue
        want = [codec.encode(m.envelope) for m in sent if m.topic == topic]
        assert [codec.encode(e) for e in r.messages(topic)] == want
    frames = list(r.frames())
    assert [f.source.frame_seq for f in frames] == list(range(6))
    for f in frames:
        assert np.array_equal(f.image, _image(f.source.frame_seq))  # PNG: lossless
        assert f.gt is not None and f.gt.instances[0].occlusion == 0.5  # matched by frame seq
        assert f.record.stamp_ns == f.source.capture_ns + 1000


def test_frame_count_equals_frames_published_with_jpeg(tmp_path: Path) -> None:
    logic, sent = _record(RecorderConfig(out=str(tmp_path / "r.mcap")), 23, with_messages=False)
    r = DriveReader(logic.files[0])
    published = sum(m.topic == "frames" for m in sent)
    assert r.frame_count == published == logic.counts["frames"] == len(list(r.records()))
    assert all(rec.format == "jpeg" for rec in r.records())


def test_rgb8_and_mono8_frames_are_stored_as_bgr(tmp_path: Path) -> None:
    cfg = RecorderConfig(out=str(tmp_path / "r.mcap"), topics=("frames",), image_format="png")
    logic = RecorderLogic(cfg)
    rgb = _image(1)
    mono = np.ascontiguousarray(_image(2)[:, :, :1])
    logic.step(0, _frame(0, rgb, "rgb8"))
    logic.step(0, _frame(1, mono, "mono8"))
    logic.close()
    a, b = (f.image for f in DriveReader(logic.files[0]).frames())
    assert np.array_equal(a, rgb[:, :, ::-1])
    assert np.array_equal(b, np.repeat(mono, 3, axis=2))


def test_split_by_size_gives_valid_drives_that_add_up(tmp_path: Path) -> None:
    cfg = RecorderConfig(
        out=str(tmp_path / "drive.mcap"),
        topics=("frames", "gt"),
        chunk_bytes=8_000,
        split_bytes=20_000,
        compression="lz4",
    )
    logic, _ = _record(cfg, 40)
    assert len(logic.files) >= 3
    assert logic.files[:2] == [str(tmp_path / "drive.mcap"), str(tmp_path / "drive_0001.mcap")]
    seqs = []
    for i, path in enumerate(logic.files):
        r = DriveReader(path)
        assert r.meta.camera_id == "cam7" and r.meta.width == W
        assert r.frame_count == r.counts["frames"]
        seqs += [rec.source.frame_seq for rec in r.records()]
        if i < len(logic.files) - 1:
            assert Path(path).stat().st_size >= cfg.split_bytes
    assert seqs == list(range(40))


def test_split_by_duration_into_a_folder(tmp_path: Path) -> None:
    cfg = RecorderConfig(out=str(tmp_path / "rec"), topics=("frames",), split_s=0.5)
    logic, _ = _record(cfg, 25, with_messages=False)  # 25 frames 50 ms apart: 1.2 s
    assert [Path(f).name for f in logic.files] == ["run_0000.mcap", "run_0001.mcap", "run_0002.mcap"]
    assert [DriveReader(f).frame_count for f in logic.files] == [10, 10, 5]


def test_chunk_goes_to_disk_after_chunk_s(tmp_path: Path) -> None:
    logic = RecorderLogic(RecorderConfig(out=str(tmp_path / "r.mcap"), topics=("frames",), chunk_s=0.2))
    assert logic.next_wakeup_ns(0) is None  # nothing buffered: nothing to wake up for
    size0 = Path(logic.files[0]).stat().st_size
    logic.step(5_000, _frame(0))
    assert logic.next_wakeup_ns(5_000) == 5_000 + 200_000_000
    assert Path(logic.files[0]).stat().st_size == size0  # still in the open chunk
    logic.step(5_000 + 200_000_000, None)
    assert Path(logic.files[0]).stat().st_size > size0 + 1000
    assert logic.next_wakeup_ns(5_000 + 200_000_000) is None
    logic.close()


def test_existing_files_are_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "r.mcap"
    out.write_bytes(b"keep me")
    logic, _ = _record(RecorderConfig(out=str(out), topics=("frames",)), 2, with_messages=False)
    assert logic.files == [str(split_path(str(out), 1))]
    assert out.read_bytes() == b"keep me"


def test_bad_message_is_counted_and_skipped(tmp_path: Path) -> None:
    logic = RecorderLogic(RecorderConfig(out=str(tmp_path / "r.mcap"), topics=("frames",)))
    good = _frame(0)
    logic.step(0, Received(good.envelope, None))  # a frame without pixels
    logic.step(0, good)
    logic.close()
    assert logic.counters()["errors"] == 1 and logic.counts["frames"] == 1
    assert "without pixels" in logic.last_error
    assert DriveReader(logic.files[0]).frame_count == 1


@pytest.mark.parametrize(
    "params, match",
    [
        ({"topics": ["frames.rect"]}, "not recordable"),
        ({"topics": ["nope"]}, "unknown topic"),
        ({"compression": "gzip"}, "compression"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
    ],
)
def test_bad_config_is_rejected(params: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_config(RecorderConfig, params, where="node 'recorder'")


class _Viewer:
    """A frame consumer without ``keep_all``: keeps only the newest frame."""

    inputs = ("frames",)
    outputs: tuple[str, ...] = ()


def test_node_loop_gives_a_recorder_every_message(tmp_path: Path, run_dir: str) -> None:
    logic = RecorderLogic(RecorderConfig(out=str(tmp_path / "r.mcap"), topics=("frames", "gt")))
    loop = NodeLoop(NodeContext("recorder", run_dir), logic, caps=NODE_TYPES["recorder"].caps)
    viewer = NodeLoop(NodeContext("viewer", run_dir), _Viewer())  # type: ignore[arg-type]
    try:
        assert loop.sub is not None and not loop.sub.keep_newest and not loop.sub.receivers
        assert viewer.sub is not None and viewer.sub.keep_newest and viewer.sub.receivers
    finally:
        loop.close()
        viewer.close()
    assert DriveReader(logic.files[0]).frame_count == 0  # closing the loop finished the file


def test_a_recording_replays_like_a_drive(tmp_path: Path) -> None:
    logic, _ = _record(RecorderConfig(out=str(tmp_path / "r.mcap"), topics=("frames", "gt"), image_format="png"), 5)
    replay = ReplayLogic(build_config(ReplayConfig, {"drive": logic.files[0], "rate": 0, "start_delay_s": 0}))
    outs = []
    while not replay.finished:
        outs += replay.step(0, None)
    frames = [o for o in outs if o.topic == "frames"]
    gts = [o for o in outs if o.topic == "gt"]
    assert len(frames) == len(gts) == 5 and replay.camera_id == "cam7"
    for i, (f, g) in enumerate(zip(frames, gts, strict=True)):
        assert np.array_equal(f.pixels, _image(i)) and g.source == f.source
        assert g.payload.instances[0].occlusion == 0.5

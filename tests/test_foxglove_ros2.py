"""Foxglove and ROS 2: the live node speaks the Foxglove WebSocket protocol, the Foxglove
export decodes with its schemas, a ROS 2 bag written by ``perception export ros2`` reads back
with rosbags, a user's bag imports, replays and evaluates, and bad bags give clear errors."""

from __future__ import annotations

import base64
import json
import shutil
import struct
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from perception.bus.masks import encode_mask
from perception.bus.pubsub import Received, header_for
from perception.bus.schema import Detections, Envelope, Instance, Source, Track, Tracks
from perception.cli import main
from perception.drives.drive_file import DriveMeta, DriveReader, DriveWriter

W, H = 160, 96


def _tracks(k: int) -> Tracks:
    """Two tracks moving right, one coasted every third frame."""
    out = []
    for tid, (x, y, cls) in {3: (10, 20, 2), 8: (90, 40, 0)}.items():
        m = np.zeros((H, W), bool)
        x0 = x + 2 * k
        m[y : y + 30, x0 : x0 + 25] = True
        out.append(
            Track(
                track_id=tid,
                state="confirmed",
                class_id=cls,
                score=0.8,
                box_xyxy=(x0, y, x0 + 25, y + 30),
                mask=encode_mask(m),
                predicted=tid == 8 and k % 3 == 2,
            )
        )
    return Tracks(image_width=W, image_height=H, tracks=tuple(out))


def _image(k: int) -> np.ndarray:
    return np.random.default_rng(k).integers(0, 255, (H, W, 3), dtype=np.uint8)


def write_run(path: Path, frames: int = 6) -> list[Tracks]:
    """A recorded run: frames, detections and tracks (capture 100 ms apart)."""
    out = []
    with DriveWriter(path, DriveMeta(camera_id="cam0", width=W, height=H, fps=10.0, generator="test")) as w:
        for k in range(frames):
            src = Source("cam0", k, 5_000_000_000 + k * 100_000_000)
            w.write_frame(_image(k), src)
            t = _tracks(k)
            det = Detections(
                "yolact_fast",
                W,
                H,
                tuple(Instance(x.class_id, x.score, x.box_xyxy, x.mask) for x in t.tracks),
                inference_ms=20.0,
            )
            w.write(Envelope("detections", k, src.capture_ns + 25_000_000, src, det))
            w.write(Envelope("tracks", k, src.capture_ns + 30_000_000, src, t))
            out.append(t)
    return out


def _decoder(schema_name: str, schema_data: bytes):  # type: ignore[no-untyped-def]
    """The protobuf message class of a Foxglove schema, built from the schema's own
    FileDescriptorSet (what the Foxglove app does)."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(schema_data)
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(schema_name))


def _boxes_and_labels(msg) -> tuple[list[tuple[float, ...]], list[str]]:  # type: ignore[no-untyped-def]
    boxes = []
    for p in msg.points:
        if {m.key: m.value for m in p.metadata}.get("kind") == "box":
            assert len(p.points) == 4 and p.type == 2  # LINE_LOOP of the four corners
            xs, ys = [q.x for q in p.points], [q.y for q in p.points]
            boxes.append((min(xs), min(ys), max(xs), max(ys)))
    return boxes, [t.text for t in msg.texts]


def _expected(t: Tracks) -> tuple[list[tuple[float, ...]], list[str]]:
    return (
        [tuple(float(v) for v in tr.box_xyxy) for tr in t.tracks],
        [
            f"{['person', 'bicycle', 'car'][tr.class_id]} {tr.track_id}{' ?' if tr.predicted else ''} 0.80"
            for tr in t.tracks
        ],
    )


def test_a_foxglove_websocket_client_gets_the_trackers_output(tmp_path: Path) -> None:
    from websockets.sync.client import connect

    from perception.outputs.foxglove_bridge import FoxgloveConfig, FoxgloveLogic

    # no rate limit in effect: three frames sent back to back (a fast machine encodes one in
    # well under a millisecond)
    logic = FoxgloveLogic(FoxgloveConfig(port=0, max_rate_hz=1e9))
    try:
        with connect(
            f"ws://127.0.0.1:{logic.port}", subprotocols=["foxglove.sdk.v1", "foxglove.websocket.v1"], open_timeout=10
        ) as ws:
            channels: dict[str, dict] = {}
            deadline = time.monotonic() + 10
            while len(channels) < 5 and time.monotonic() < deadline:
                msg = json.loads(ws.recv(timeout=5))
                if msg.get("op") == "advertise":
                    channels.update({c["topic"]: c for c in msg["channels"]})
            image, ann = channels["/camera/image"], channels["/perception/annotations"]
            assert image["schemaName"] == "foxglove.CompressedImage" and image["encoding"] == "protobuf"
            ws.send(
                json.dumps(
                    {
                        "op": "subscribe",
                        "subscriptions": [{"id": 1, "channelId": image["id"]}, {"id": 2, "channelId": ann["id"]}],
                    }
                )
            )
            deadline = time.monotonic() + 10
            # the server registers the two subscriptions one after the other: wait for both
            while (
                not (logic.view.image.has_sinks() and logic.view.annotations.has_sinks())
                and time.monotonic() < deadline
            ):
                time.sleep(0.02)
            sent = []
            for k in range(3):
                src = Source("cam0", k, time.monotonic_ns())
                frame = _image(k)
                logic.step(0, Received(Envelope("frames", k, src.capture_ns, src, header_for(frame)), frame))
                t = _tracks(k)
                logic.step(0, Received(Envelope("tracks", k, src.capture_ns + 1000, src, t)))
                sent.append(t)
            assert (logic.sent, logic.skipped, logic.unmatched) == (3, 0, 0)
            decode = {
                1: _decoder(image["schemaName"], base64.b64decode(image["schema"])),
                2: _decoder(ann["schemaName"], base64.b64decode(ann["schema"])),
            }
            got: dict[int, list] = {1: [], 2: []}
            while len(got[2]) < 3 or len(got[1]) < 3:
                data = ws.recv(timeout=10)
                if isinstance(data, bytes) and data[0] == 1:  # MessageData: opcode, subscription id, log time, payload
                    sub, _ = struct.unpack_from("<IQ", data, 1)
                    got[sub].append(decode[sub].FromString(data[13:]))
    finally:
        logic.close()
    for t, msg in zip(sent, got[2], strict=True):
        assert _boxes_and_labels(msg) == _expected(t)
    decoded = cv2.imdecode(np.frombuffer(got[1][0].data, np.uint8), cv2.IMREAD_COLOR)
    assert got[1][0].format == "jpeg" and decoded.shape == (H, W, 3)
    assert logic.sent == 3 and logic.unmatched == 0


def test_the_foxglove_export_decodes_with_foxglove_schemas(tmp_path: Path) -> None:
    from mcap.reader import make_reader

    from perception.outputs.foxglove_scene import export_foxglove

    tracks = write_run(tmp_path / "run.mcap")
    assert main(["export", "foxglove", str(tmp_path / "run.mcap"), str(tmp_path / "fox.mcap")]) == 0
    decoded: dict[str, list] = {}
    with open(tmp_path / "fox.mcap", "rb") as f:
        for schema, channel, message in make_reader(f).iter_messages():
            if channel.message_encoding == "protobuf":
                assert schema.encoding == "protobuf" and schema.name.startswith("foxglove.")
                value = _decoder(schema.name, schema.data).FromString(message.data)
            else:
                assert channel.message_encoding == "json" and schema.encoding == "jsonschema"
                value = json.loads(message.data)
            decoded.setdefault(channel.topic, []).append((schema.name, value, message.log_time))
    assert {t: len(v) for t, v in decoded.items()} == {
        "/camera/image": 6,
        "/perception/annotations": 6,
        "/perception/masks": 6,
        "/perception/latency": 6,
    }
    assert {v[0][0] for v in decoded.values()} == {
        "foxglove.CompressedImage",
        "foxglove.ImageAnnotations",
        "foxglove.RawImage",
        "perception.Latency",
    }
    for (_, msg, _), t in zip(decoded["/perception/annotations"], tracks, strict=True):
        assert _boxes_and_labels(msg) == _expected(t)
    meta = DriveReader(tmp_path / "run.mcap").meta
    assert [lt for *_, lt in decoded["/camera/image"]] == [
        meta.wall_ns(5_000_000_000 + k * 100_000_000) for k in range(6)
    ]
    assert abs(decoded["/camera/image"][0][2] - time.time_ns()) < 600e9  # a date of today, not 1970
    assert decoded["/perception/latency"][0][1]["capture_to_tracks_ms"] == pytest.approx(30.0)
    raw = decoded["/perception/masks"][0][1]
    rgba = np.frombuffer(raw.data, np.uint8).reshape(H, W, 4)
    assert raw.encoding == "rgba8" and (rgba[..., 3] > 0).sum() == 2 * 30 * 25
    with pytest.raises(ValueError, match="exists"):
        export_foxglove(tmp_path / "run.mcap", tmp_path / "fox.mcap")


def test_a_ros2_export_reads_back_with_rosbags(tmp_path: Path) -> None:
    from rosbags.rosbag2 import Reader

    from perception.outputs.ros2_bag import typestore

    tracks = write_run(tmp_path / "run.mcap")
    assert main(["export", "ros2", str(tmp_path / "run.mcap"), str(tmp_path / "bag")]) == 0
    assert (tmp_path / "bag" / "metadata.yaml").is_file()
    meta = DriveReader(tmp_path / "run.mcap").meta
    store = typestore()
    with Reader(tmp_path / "bag") as bag:
        assert {c.topic: (c.msgtype, c.msgcount) for c in bag.connections} == {
            "/camera/image/compressed": ("sensor_msgs/msg/CompressedImage", 6),
            "/perception/detections": ("vision_msgs/msg/Detection2DArray", 6),
            "/perception/tracks": ("vision_msgs/msg/Detection2DArray", 6),
            "/perception/track_masks": ("sensor_msgs/msg/Image", 6),
        }
        ids, stamps, labels = [], [], []
        for c, stamp, raw in bag.messages():
            msg = store.deserialize_cdr(raw, c.msgtype)
            if c.topic == "/perception/tracks":
                ids.append([d.id for d in msg.detections])
                stamps.append((stamp, msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec))
                assert [d.results[0].hypothesis.class_id for d in msg.detections] == ["car", "person"]
            if c.topic == "/perception/track_masks":
                labels.append(set(np.unique(np.frombuffer(bytes(msg.data), np.uint16))) - {0})
    assert ids == [[str(tr.track_id) for tr in t.tracks] for t in tracks]
    assert stamps == [(meta.wall_ns(5_000_000_000 + k * 100_000_000),) * 2 for k in range(6)]
    assert labels == [{3, 8}] * 6


def _user_bag(path: Path, frames: list[np.ndarray], encoding: str = "rgb8", storage: str = "sqlite3") -> None:
    """A bag as a ROS 2 camera driver records it: sensor_msgs/Image and CameraInfo."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from perception.outputs.ros2_bag import typestore

    store = typestore()
    t = store.types
    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    with Writer(path, version=9, storage_plugin=plugin) as w:
        img_c = w.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=store)
        info_c = w.add_connection("/cam/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store)
        for k, bgr in enumerate(frames):
            stamp = 1_700_000_000_000_000_000 + k * 66_666_667
            header = t["std_msgs/msg/Header"](
                stamp=t["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam"
            )
            pix = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if encoding == "rgb8" else bgr[..., 0].copy()
            msg = t["sensor_msgs/msg/Image"](
                header=header,
                height=bgr.shape[0],
                width=bgr.shape[1],
                encoding=encoding,
                is_bigendian=0,
                step=pix.strides[0],
                data=pix.reshape(-1),
            )
            w.write(img_c, stamp, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
            roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
            info = t["sensor_msgs/msg/CameraInfo"](
                header=header,
                height=bgr.shape[0],
                width=bgr.shape[1],
                distortion_model="plumb_bob",
                d=np.array([0.01, -0.002, 0.0, 0.0, 0.0]),
                k=np.array([300.0, 0, 320, 0, 300.0, 180, 0, 0, 1]),
                r=np.eye(3).reshape(-1),
                p=np.array([300.0, 0, 320, 0, 0, 300.0, 180, 0, 0, 0, 1, 0]),
                binning_x=0,
                binning_y=0,
                roi=roi,
            )
            w.write(info_c, stamp, store.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"))


@pytest.mark.slow
def test_a_users_bag_imports_replays_and_evaluates(tmp_path: Path) -> None:
    from perception.calibration.camera_file import load_calibration
    from perception.synth import SynthConfig, write_drive

    write_drive(SynthConfig(frames=8, seed=5, width=640, height=360, scenario="urban"), tmp_path / "synth.mcap")
    frames = [f.image for f in DriveReader(tmp_path / "synth.mcap").frames()]
    _user_bag(tmp_path / "bag", frames)
    assert (
        main(
            [
                "import-bag",
                str(tmp_path / "bag"),
                "--image-topic",
                "/cam/image_raw",
                "--camera-info-topic",
                "/cam/camera_info",
                "--out",
                str(tmp_path / "drive.mcap"),
                "--fps",
                "15",
            ]
        )
        == 0
    )
    r = DriveReader(tmp_path / "drive.mcap")
    got = list(r.frames())
    assert len(got) == 8 and got[0].image.shape == (360, 640, 3)
    assert [f.source.capture_ns for f in got] == [1_700_000_000_000_000_000 + k * 66_666_667 for k in range(8)]
    assert np.abs(got[3].image.astype(int) - frames[3]).mean() < 3  # JPEG of the same pixels
    calib = load_calibration(tmp_path / "drive.yaml")
    assert calib.camera.image_width == 640 and calib.camera.camera_matrix[0] == 300.0
    assert (
        main(
            [
                "replay",
                str(tmp_path / "drive.mcap"),
                "--deterministic",
                "--record",
                str(tmp_path / "run.mcap"),
                "--set",
                "segmenter.threads=1",
            ]
        )
        == 0
    )
    assert main(["eval", str(tmp_path / "run.mcap"), "--out", str(tmp_path / "rep"), "--no-plots"]) == 0
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["stats"]["frames_total"] == 8 and report["stats"]["frames_with_tracks"] == 8


def test_bad_bags_name_the_bag_and_topic_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from perception.outputs.ros2_bag import BagError, import_bag

    frames = [_image(k) for k in range(3)]
    _user_bag(tmp_path / "bag", frames, storage="mcap")
    out = tmp_path / "d.mcap"
    with pytest.raises(BagError, match=r"bag: no topic '/front/image'; its topics: /cam/camera_info, /cam/image_raw"):
        import_bag(tmp_path / "bag", "/front/image", out)
    with pytest.raises(BagError, match="topic '/cam/camera_info' is sensor_msgs/msg/CameraInfo, not sensor_msgs"):
        import_bag(tmp_path / "bag", "/cam/camera_info", out)
    _user_bag(tmp_path / "mono16", frames, encoding="16UC1")
    with pytest.raises(BagError, match="unsupported image encoding '16UC1'; supported: bgr8, rgb8, mono8"):
        import_bag(tmp_path / "mono16", "/cam/image_raw", out)
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "bag", cut)
    data = next(cut.glob("*.mcap"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(BagError, match=r"cut"):
        import_bag(cut, "/cam/image_raw", out)
    assert not out.exists() and not list(tmp_path.glob(".d.mcap*"))
    assert main(["import-bag", str(tmp_path / "bag"), "--image-topic", "/nope", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no topic '/nope'" in err[0]
    assert main(["export", "ros2", str(tmp_path / "missing.mcap"), str(tmp_path / "b2")]) == 2
    assert "no such drive file" in capsys.readouterr().err and not (tmp_path / "b2").exists()


@pytest.mark.slow
def test_a_running_foxglove_node_serves_what_the_tracker_published(tmp_path: Path, run_dir: str) -> None:
    import socket
    import threading

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from perception.synth import SynthConfig, write_drive
    from perception.system.launch import load_launch, with_node
    from perception.system.runner import run_pipeline

    drive = tmp_path / "drive.mcap"
    write_drive(SynthConfig(frames=20, seed=9, width=320, height=180, fps=10.0, scenario="urban"), drive)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    spec = load_launch(
        root / "launch" / "demo.yaml",
        [
            f"replay.drive={drive}",
            "replay.start_delay_s=4",
            "segmenter.policy=fast",
            "segmenter.threads=1",
            "foxglove.enabled=true",
            f"foxglove.port={port}",
            "foxglove.max_rate_hz=1000",
        ],
    )
    spec = with_node(spec, "recorder", {"out": str(tmp_path / "run.mcap"), "chunk_s": 0.2}, "recorder")
    got: list = []
    errors: list = []
    finished = threading.Event()

    def client() -> None:  # the pipeline runs in the main thread (it handles signals)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    ws = connect(f"ws://127.0.0.1:{port}", subprotocols=["foxglove.sdk.v1", "foxglove.websocket.v1"])
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the foxglove node never listened"
                    time.sleep(0.2)
            with ws:
                channels: dict[str, dict] = {}
                while "/perception/annotations" not in channels:
                    msg = json.loads(ws.recv(timeout=10))
                    if msg.get("op") == "advertise":
                        channels.update({c["topic"]: c for c in msg["channels"]})
                ann = channels["/perception/annotations"]
                ws.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": 7, "channelId": ann["id"]}]}))
                decode = _decoder(ann["schemaName"], base64.b64decode(ann["schema"]))
                while not finished.is_set():
                    try:
                        data = ws.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    except ConnectionClosed:  # the node stops with the pipeline
                        break
                    if isinstance(data, bytes) and data[0] == 1:
                        got.append(decode.FromString(data[13:]))
        except Exception as e:  # reported by the test below
            errors.append(e)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        result = run_pipeline(spec, run_dir, drain_s=2.0, timeout_s=120)
    finally:
        finished.set()
        thread.join(timeout=30)
    assert not errors, errors
    assert result.code == 0, result.reason
    recorded = {e.source.frame_seq: e.payload for e in DriveReader(tmp_path / "run.mcap").messages("tracks")}
    assert len(got) >= 10  # of 20 frames; the node takes the newest and may skip some
    for msg in got:
        seq = int({m.key: m.value for m in msg.metadata}["frame_seq"])
        boxes, labels = _boxes_and_labels(msg)
        t = recorded[seq]
        assert boxes == [tuple(float(v) for v in tr.box_xyxy) for tr in t.tracks]
        assert [lb.split()[1] for lb in labels] == [str(tr.track_id) for tr in t.tracks]

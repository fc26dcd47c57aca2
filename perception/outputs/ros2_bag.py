"""ROS 2 both ways, without ROS installed, with the ``rosbags`` package (its CDR and its
rosbag2 reader and writer; no CDR code of ours).

:func:`export_ros2`: a recorded run as a rosbag2 folder (MCAP storage, CDR,
``metadata.yaml``) that ``ros2 bag play`` plays into a ROS 2 stack:

- ``/camera/image/compressed``: ``sensor_msgs/msg/CompressedImage`` (the recorded JPEG/PNG);
- ``/perception/detections``: ``vision_msgs/msg/Detection2DArray`` (one hypothesis per
  detection: class name and score; ``id`` empty);
- ``/perception/tracks``: ``vision_msgs/msg/Detection2DArray`` with the track id in ``id``;
- ``/perception/track_masks``: ``sensor_msgs/msg/Image``, ``mono16``: the track id of each
  pixel (0 = none), the label-image convention of ROS segmentation packages.

Header stamps and bag times are the capture stamps on the wall clock (the run's clock
anchor); ``frame_id`` is the camera id.

:func:`import_bag`: a user's rosbag2 (MCAP or sqlite3 storage) with ``sensor_msgs/Image`` or
``CompressedImage`` frames becomes a drive the node replays; ``camera_info`` becomes the
calibration file. Both write under a temporary name and move it into place, so a failure
leaves nothing half written.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from perception.bus.classes import CLASSES
from perception.bus.schema import Detections, Source, Tracks
from perception.drives.drive_file import DriveError, DriveMeta, DriveReader, DriveWriter, RecordedFrame

IMAGE, DETECTIONS, TRACKS, MASKS = (
    "/camera/image/compressed",
    "/perception/detections",
    "/perception/tracks",
    "/perception/track_masks",
)
DETECTION_ARRAY = "vision_msgs/msg/Detection2DArray"

#: vision_msgs 4.x (ROS 2 Humble and later), which the default type store does not carry
VISION_MSGS = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": "vision_msgs/ObjectHypothesis hypothesis\n"
    "geometry_msgs/PoseWithCovariance pose\n",
    "vision_msgs/msg/Detection2D": "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
    "vision_msgs/BoundingBox2D bbox\nstring id\n",
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
}
#: raw image encodings :func:`import_bag` reads, and how to make BGR of them
RAW_ENCODINGS = {
    "bgr8": None,
    "rgb8": cv2.COLOR_RGB2BGR,
    "mono8": cv2.COLOR_GRAY2BGR,
    "bgra8": cv2.COLOR_BGRA2BGR,
    "rgba8": cv2.COLOR_RGBA2BGR,
}


class BagError(DriveError):
    """A bag that cannot be imported or exported (names the bag and topic)."""


def typestore() -> Any:
    """ROS 2 Humble's message types plus vision_msgs."""
    store = get_typestore(Stores.ROS2_HUMBLE)
    types: dict[str, Any] = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def _header(store: Any, stamp_ns: int, frame_id: str) -> Any:
    t = store.types
    return t["std_msgs/msg/Header"](
        stamp=t["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
        frame_id=frame_id,
    )


def _detection_array(store: Any, header: Any, items: list[tuple[int, float, tuple[float, ...], str]]) -> Any:
    t = store.types
    pose = t["geometry_msgs/msg/PoseWithCovariance"](
        pose=t["geometry_msgs/msg/Pose"](
            position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
            orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
        ),
        covariance=np.zeros(36, np.float64),
    )
    detections = []
    for class_id, score, (x0, y0, x1, y1), ident in items:
        name = CLASSES[class_id] if 0 <= class_id < len(CLASSES) else str(class_id)
        hyp = t["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=name, score=float(score)), pose=pose
        )
        centre = t["vision_msgs/msg/Pose2D"](
            position=t["vision_msgs/msg/Point2D"](x=(x0 + x1) / 2, y=(y0 + y1) / 2), theta=0.0
        )
        detections.append(
            t["vision_msgs/msg/Detection2D"](
                header=header,
                results=[hyp],
                bbox=t["vision_msgs/msg/BoundingBox2D"](center=centre, size_x=float(x1 - x0), size_y=float(y1 - y0)),
                id=ident,
            )
        )
    return t[DETECTION_ARRAY](header=header, detections=detections)


def _label_image(store: Any, header: Any, tracks: Tracks) -> Any:
    labels = np.zeros((tracks.image_height, tracks.image_width), np.uint16)
    for tr in tracks.tracks:
        if tr.mask is not None:
            labels[mask_utils.decode(tr.mask.to_coco()).astype(bool)] = tr.track_id
    return store.types["sensor_msgs/msg/Image"](
        header=header,
        height=labels.shape[0],
        width=labels.shape[1],
        encoding="mono16",
        is_bigendian=0,
        step=2 * labels.shape[1],
        data=labels.view(np.uint8).reshape(-1),
    )


#: the export's topics and their message types, in the order the bag lists its connections
EXPORT_TYPES = {
    IMAGE: "sensor_msgs/msg/CompressedImage",
    DETECTIONS: DETECTION_ARRAY,
    TRACKS: DETECTION_ARRAY,
    MASKS: "sensor_msgs/msg/Image",
}


class _BagOut:
    """The export's connections on an open rosbag2 writer, and how many messages each got."""

    def __init__(self, writer: Writer, store: Any) -> None:
        self.writer, self.store = writer, store
        self.conns = {
            topic: writer.add_connection(topic, name, typestore=store) for topic, name in EXPORT_TYPES.items()
        }
        self.counts = dict.fromkeys(EXPORT_TYPES, 0)

    def put(self, topic: str, msg: Any, stamp_ns: int) -> None:
        """Write ``msg`` (of the topic's type) at bag time ``stamp_ns``."""
        self.writer.write(self.conns[topic], stamp_ns, self.store.serialize_cdr(msg, EXPORT_TYPES[topic]))
        self.counts[topic] += 1


def _by_frame(reader: DriveReader, topic: str) -> dict[int, Any]:
    """``{frame_seq: payload}`` of a recorded topic (empty when the run did not record it)."""
    if topic not in reader.counts:
        return {}
    return {e.source.frame_seq: e.payload for e in reader.messages(topic) if e.source}


def _put_frame(
    bag: _BagOut, rec: RecordedFrame, header: Any, stamp_ns: int, dets: Detections | None, tracks: Tracks | None
) -> None:
    """One recorded frame's messages: its image, then its detections, tracks and track
    masks where the run has them."""
    store = bag.store
    image = store.types["sensor_msgs/msg/CompressedImage"](
        header=header, format=rec.format, data=np.frombuffer(rec.data, np.uint8)
    )
    bag.put(IMAGE, image, stamp_ns)
    if dets is not None:
        items = [(i.class_id, i.score, i.box_xyxy, "") for i in dets.instances]
        bag.put(DETECTIONS, _detection_array(store, header, items), stamp_ns)
    if tracks is not None:
        items = [(k.class_id, k.score, k.box_xyxy, str(k.track_id)) for k in tracks.tracks]
        bag.put(TRACKS, _detection_array(store, header, items), stamp_ns)
        bag.put(MASKS, _label_image(store, header, tracks), stamp_ns)


def export_ros2(run: str | Path, bag_dir: str | Path) -> dict[str, int]:
    """Write the run as a rosbag2 folder ``bag_dir`` (which must not exist); returns
    messages per topic."""
    out = Path(bag_dir)
    if out.exists():
        raise BagError(f"{out}: exists; an export never overwrites")
    reader = DriveReader(run)
    meta = reader.meta
    store = typestore()
    frame_id = meta.camera_id or "camera"
    dets, trks = _by_frame(reader, "detections"), _by_frame(reader, "tracks")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with Writer(tmp, version=9, storage_plugin=StoragePlugin.MCAP) as w:
            bag = _BagOut(w, store)
            for rec in reader.records():
                seq, stamp = rec.source.frame_seq, meta.wall_ns(rec.source.capture_ns)
                _put_frame(bag, rec, _header(store, stamp, frame_id), stamp, dets.get(seq), trks.get(seq))
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return bag.counts


def _image(store: Any, conn: Any, raw: bytes, where: str) -> tuple[np.ndarray, bytes | None, str]:
    """``(BGR image, encoded bytes kept as they are, format)`` of one image message."""
    msg = store.deserialize_cdr(raw, conn.msgtype)
    if conn.msgtype == "sensor_msgs/msg/CompressedImage":
        data = bytes(msg.data)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise BagError(f"{where}: a CompressedImage that does not decode (format {msg.format!r})")
        fmt = "png" if data[:4] == b"\x89PNG" else "jpeg"
        return image, data if data[:2] == b"\xff\xd8" or fmt == "png" else None, fmt
    if msg.encoding not in RAW_ENCODINGS:
        raise BagError(f"{where}: unsupported image encoding {msg.encoding!r}; supported: {', '.join(RAW_ENCODINGS)}")
    channels = 1 if msg.encoding == "mono8" else 4 if msg.encoding.endswith("a8") else 3
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    image = np.ascontiguousarray(rows[:, : msg.width * channels].reshape(msg.height, msg.width, channels))
    code = RAW_ENCODINGS[msg.encoding]
    return (cv2.cvtColor(image, code) if code is not None else image), None, "jpeg"


def _camera_info(store: Any, conn: Any, raw: bytes) -> dict[str, Any]:
    m = store.deserialize_cdr(raw, conn.msgtype)
    model = m.distortion_model or "plumb_bob"
    d = [float(v) for v in m.d] or [0.0] * 5
    return {
        "image_width": int(m.width),
        "image_height": int(m.height),
        "camera_name": m.header.frame_id or "camera",
        "camera_matrix": {"rows": 3, "cols": 3, "data": [float(v) for v in m.k]},
        "distortion_model": model,
        "distortion_coefficients": {"rows": 1, "cols": len(d), "data": d},
        "rectification_matrix": {"rows": 3, "cols": 3, "data": [float(v) for v in m.r]},
        "projection_matrix": {"rows": 3, "cols": 4, "data": [float(v) for v in m.p]},
    }


IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def _open(bag: Path) -> Reader:
    """The bag's reader, opened; :class:`BagError` when it is not a readable rosbag2."""
    try:
        reader = Reader(bag)
        reader.open()
    except (ReaderError, OSError, ValueError, KeyError) as e:
        raise BagError(f"{bag}: not a readable rosbag2: {type(e).__name__}: {e}") from None
    return reader


def _connection(bag: Path, reader: Reader, topic: str) -> Any:
    """The connection of ``topic``; :class:`BagError` listing the bag's topics when it has none."""
    topics = {c.topic: c for c in reader.connections}
    if topic not in topics:
        raise BagError(f"{bag}: no topic {topic!r}; its topics: {', '.join(sorted(topics)) or 'none'}")
    return topics[topic]


def _image_connection(bag: Path, reader: Reader, topic: str) -> Any:
    """The connection of ``topic``, checked to carry ``Image`` or ``CompressedImage``."""
    conn = _connection(bag, reader, topic)
    if conn.msgtype not in IMAGE_TYPES:
        raise BagError(f"{bag}: topic {topic!r} is {conn.msgtype}, not sensor_msgs/msg/Image or CompressedImage")
    return conn


def _write_image(w: DriveWriter, store: Any, conn: Any, raw: bytes, seq: int, where: str) -> tuple[int, int]:
    """One image message as frame ``seq`` of the drive, at its header stamp (JPEG/PNG bytes
    kept as they are); returns the image's ``(width, height)``."""
    image, encoded, fmt = _image(store, conn, raw, where)
    header = store.deserialize_cdr(raw, conn.msgtype).header
    src = Source(w.meta.camera_id, seq, header.stamp.sec * 1_000_000_000 + header.stamp.nanosec)
    if encoded is not None:
        w.write_encoded_frame(encoded, image.shape[1], image.shape[0], src, fmt=fmt)  # type: ignore[arg-type]
    else:
        w.write_frame(image, src)
    return image.shape[1], image.shape[0]


def _copy_frames(
    bag: Path, reader: Reader, store: Any, w: DriveWriter, conn: Any, info_conn: Any | None
) -> tuple[int, tuple[int, int], dict[str, Any] | None]:
    """Write every message of the image connection ``conn`` to the drive; returns the frame
    count, the last frame's ``(width, height)`` and the first message of ``info_conn`` as a
    calibration file's dict (None without one)."""
    frames, size, calib = 0, (0, 0), None
    wanted = [conn] + ([info_conn] if info_conn is not None else [])
    for c, stamp, raw in reader.messages(connections=wanted):
        if c is info_conn:
            if calib is None:
                calib = _camera_info(store, c, raw)
            continue
        size = _write_image(w, store, c, raw, frames, f"{bag}: {c.topic} message at {stamp}")
        frames += 1
    return frames, size, calib


def _write_calibration(calib: dict[str, Any] | None, bag: Path, topic: str, path: Path) -> None:
    """Check ``calib`` (the first message of the camera_info ``topic``, None when it had
    none) as a calibration file is checked, then write it to ``path``."""
    import yaml

    from perception.calibration.camera_file import camera_info_from_dict

    if calib is None:
        raise BagError(f"{bag}: topic {topic!r} has no messages")
    camera_info_from_dict(calib, f"{bag}:{topic}")  # the same checks as a calib file
    path.write_text(yaml.safe_dump(calib, sort_keys=False))


def import_bag(
    bag: str | Path,
    image_topic: str,
    out: str | Path,
    camera_info_topic: str | None = None,
    calib_out: str | Path | None = None,
    camera_id: str = "",
    fps: float = 0.0,
) -> dict[str, Any]:
    """Turn the ``image_topic`` of a rosbag2 folder into a drive at ``out`` (frames keep
    their header stamps; JPEG/PNG bytes are kept as they are); with ``camera_info_topic``
    its first message becomes the calibration file ``calib_out`` (default: beside ``out``).
    Raises :class:`BagError` naming the bag and topic."""
    bag, out = Path(bag), Path(out)
    reader = _open(bag)
    try:
        conn = _image_connection(bag, reader, image_topic)
        info_conn = _connection(bag, reader, camera_info_topic) if camera_info_topic is not None else None
        store = typestore()
        tmp = out.with_name(f".{out.name}.partial")
        camera = camera_id or image_topic.strip("/").replace("/", "_")
        calib_path = None
        try:
            with DriveWriter(tmp, DriveMeta(camera_id=camera, generator="import-bag", fps=fps)) as w:
                frames, size, calib = _copy_frames(bag, reader, store, w, conn, info_conn)
                w.meta = DriveMeta(
                    camera_id=camera,
                    width=size[0],
                    height=size[1],
                    fps=fps,
                    generator="import-bag",
                    notes=f"{bag}:{image_topic}",
                )  # written at close
            if not frames:
                raise BagError(f"{bag}: topic {image_topic!r} has no messages")
            if camera_info_topic is not None:
                calib_path = Path(calib_out) if calib_out else out.with_suffix(".yaml")
                _write_calibration(calib, bag, camera_info_topic, calib_path)
            tmp.replace(out)
        except (ReaderError, ValueError, KeyError, AssertionError, IndexError) as e:
            if isinstance(e, BagError):
                raise
            raise BagError(f"{bag}: cannot read {image_topic!r}: {type(e).__name__}: {e}") from None
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        reader.close()
    return {"frames": frames, "width": size[0], "height": size[1], "calibration": str(calib_path) if calib_path else ""}

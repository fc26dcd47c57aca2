"""Our messages as Foxglove's: what the ``foxglove`` node serves live and what ``perception
export foxglove`` writes, with the ``foxglove-sdk`` package (protobuf-encoded
``foxglove.*`` schemas the Foxglove app decodes; plottable figures as JSON).

Channels (:data:`TOPICS`):

- ``/camera/image``: ``foxglove.CompressedImage``, the camera frame (JPEG);
- ``/perception/annotations``: ``foxglove.ImageAnnotations`` on that image: per track its
  box and mask outline (``LINE_LOOP`` point lists), a ``class id`` label on a dark
  background (with ``?`` for a coasted track, and the score) and its trail (``LINE_STRIP``
  of past box centres); each point list says what it is in its metadata (``kind``: ``box``,
  ``mask_outline`` or ``trail``; ``track_id``);
- ``/perception/masks``: ``foxglove.RawImage`` (``rgba8``), every track's mask in its
  colour with alpha, to overlay on the image (Foxglove has no mask type);
- ``/perception/latency``: JSON ``{capture_to_tracks_ms, inference_ms, model, instances,
  tracks}`` per frame; ``/perception/status``: JSON, each node's heartbeat.

A :class:`FoxgloveView` holds the channels in its own ``foxglove.Context``, so a server and
an MCAP writer never share state.
"""

from __future__ import annotations

import colorsys
import json
from collections import deque
from dataclasses import asdict
from pathlib import Path

import cv2
import foxglove
import numpy as np
from foxglove.channels import CompressedImageChannel, ImageAnnotationsChannel, RawImageChannel
from foxglove.messages import (
    Color,
    CompressedImage,
    ImageAnnotations,
    KeyValuePair,
    Point2,
    PointsAnnotation,
    PointsAnnotationType,
    RawImage,
    TextAnnotation,
    Timestamp,
)
from pycocotools import mask as mask_utils

from perception.bus.classes import CLASSES
from perception.bus.schema import Detections, Status, Track, Tracks

IMAGE, ANNOTATIONS, MASKS, LATENCY, STATUS = (
    "/camera/image",
    "/perception/annotations",
    "/perception/masks",
    "/perception/latency",
    "/perception/status",
)
TOPICS = (IMAGE, ANNOTATIONS, MASKS, LATENCY, STATUS)
LATENCY_SCHEMA = {
    "type": "object",
    "properties": {
        "capture_to_tracks_ms": {"type": "number"},
        "inference_ms": {"type": "number"},
        "model": {"type": "string"},
        "instances": {"type": "integer"},
        "tracks": {"type": "integer"},
        "frame_seq": {"type": "integer"},
    },
}
STATUS_SCHEMA = {
    "type": "object",
    "properties": {
        "node": {"type": "string"},
        "rate_hz": {"type": "number"},
        "dropped": {"type": "integer"},
        "errors": {"type": "integer"},
    },
}
TRAIL = 30  # box centres kept per track


def track_colour(track_id: int) -> tuple[float, float, float]:
    """A stable, distinct colour per track id (golden-ratio hues), RGB in [0, 1]."""
    return colorsys.hsv_to_rgb((track_id * 0.618033988749895) % 1.0, 0.85, 1.0)


def timestamp(ns: int) -> Timestamp:
    return Timestamp(sec=ns // 1_000_000_000, nsec=ns % 1_000_000_000)


def outline(mask: np.ndarray, max_points: int = 64) -> list[Point2]:
    """The largest outer contour of a mask as at most ``max_points`` points."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    c = max(contours, key=cv2.contourArea)[:, 0, :]
    step = max(1, len(c) // max_points)
    return [Point2(x=float(x), y=float(y)) for x, y in c[::step]]


def _points(
    ts: Timestamp,
    kind: str,
    track_id: int,
    shape: PointsAnnotationType,
    points: list[Point2],
    colour: Color,
    thickness: float = 1.0,
) -> PointsAnnotation:
    """A track's point list; its metadata says what it is (``kind``) and whose (``track_id``)."""
    return PointsAnnotation(
        timestamp=ts,
        type=shape,
        points=points,
        outline_color=colour,
        thickness=thickness,
        metadata=[KeyValuePair(key="kind", value=kind), KeyValuePair(key="track_id", value=str(track_id))],
    )


def _track_points(t: Track, ts: Timestamp, trails: dict[int, deque] | None) -> list[PointsAnnotation]:
    """A track's box (thin while coasted), its mask outline (where it has one of three
    points or more) and, when ``trails`` are kept, its trail (two box centres or more)."""
    r, g, b = track_colour(t.track_id)
    colour = Color(r=r, g=g, b=b, a=1.0)
    x0, y0, x1, y1 = t.box_xyxy
    corners = [Point2(x=x0, y=y0), Point2(x=x1, y=y0), Point2(x=x1, y=y1), Point2(x=x0, y=y1)]
    loop, strip = PointsAnnotationType.LineLoop, PointsAnnotationType.LineStrip
    out = [_points(ts, "box", t.track_id, loop, corners, colour, 1.0 if t.predicted else 2.0)]
    if t.mask is not None:
        ring = outline(mask_utils.decode(t.mask.to_coco()))
        if len(ring) >= 3:
            out.append(_points(ts, "mask_outline", t.track_id, loop, ring, colour))
    if trails is not None:
        trail = trails.setdefault(t.track_id, deque(maxlen=TRAIL))
        trail.append(Point2(x=(x0 + x1) / 2, y=(y0 + y1) / 2))
        if len(trail) >= 2:
            out.append(_points(ts, "trail", t.track_id, strip, list(trail), colour))
    return out


def _label(t: Track, ts: Timestamp) -> TextAnnotation:
    """``class id`` (with ``?`` while coasted) and the score, white on dark above the box."""
    x0, y0 = t.box_xyxy[:2]
    label = f"{CLASSES[t.class_id] if 0 <= t.class_id < len(CLASSES) else t.class_id} {t.track_id}"
    return TextAnnotation(
        timestamp=ts,
        position=Point2(x=x0, y=max(12.0, y0 - 2)),
        text=label + (" ?" if t.predicted else "") + f" {t.score:.2f}",
        font_size=12.0,
        text_color=Color(r=1.0, g=1.0, b=1.0, a=1.0),
        background_color=Color(r=0.0, g=0.0, b=0.0, a=0.7),
    )


def annotations(
    tracks: Tracks, stamp_ns: int, trails: dict[int, deque] | None = None, frame_seq: int | None = None
) -> ImageAnnotations:
    """Boxes, mask outlines, labels and trails of a frame's tracks (``trails``: kept
    between frames by the caller; updated here, those of tracks gone forgotten);
    ``frame_seq`` goes into the metadata."""
    ts = timestamp(stamp_ns)
    points = [p for t in tracks.tracks for p in _track_points(t, ts, trails)]
    texts = [_label(t, ts) for t in tracks.tracks]
    if trails is not None:
        alive = {t.track_id for t in tracks.tracks}
        for tid in [k for k in trails if k not in alive]:
            del trails[tid]
    extra = [KeyValuePair(key="frame_seq", value=str(frame_seq))] if frame_seq is not None else []
    return ImageAnnotations(timestamp=ts, points=points, texts=texts, metadata=extra)


def mask_layer(tracks: Tracks, stamp_ns: int, frame_id: str, alpha: int = 110) -> RawImage:
    """Every track's mask painted in its colour (``rgba8``; alpha 0 elsewhere)."""
    h, w = tracks.image_height, tracks.image_width
    rgba = np.zeros((h, w, 4), np.uint8)
    for t in tracks.tracks:
        if t.mask is None:
            continue
        m = mask_utils.decode(t.mask.to_coco()).astype(bool)
        rgba[m] = [*(int(v * 255) for v in track_colour(t.track_id)), alpha]
    return RawImage(
        timestamp=timestamp(stamp_ns),
        frame_id=frame_id,
        width=w,
        height=h,
        encoding="rgba8",
        step=4 * w,
        data=rgba.tobytes(),
    )


def latency_row(
    frame_seq: int, capture_ns: int, tracks_stamp_ns: int, det: Detections | None, tracks: Tracks
) -> dict[str, object]:
    return {
        "frame_seq": frame_seq,
        "capture_to_tracks_ms": (tracks_stamp_ns - capture_ns) / 1e6,
        "inference_ms": det.inference_ms if det else 0.0,
        "model": det.model if det else "",
        "instances": len(det.instances) if det else 0,
        "tracks": len(tracks.tracks),
    }


class FoxgloveView:
    """The channels of :data:`TOPICS` in ``context`` (a new one by default); log one
    frame's image, annotations, mask layer and latency with :meth:`log_frame`."""

    def __init__(self, context: foxglove.Context | None = None, frame_id: str = "camera") -> None:
        self.context = context or foxglove.Context()
        self.frame_id = frame_id
        self.image = CompressedImageChannel(IMAGE, context=self.context)
        self.annotations = ImageAnnotationsChannel(ANNOTATIONS, context=self.context)
        self.masks = RawImageChannel(MASKS, context=self.context)
        self.latency = foxglove.Channel(
            LATENCY,
            message_encoding="json",
            context=self.context,
            schema=foxglove.Schema(
                name="perception.Latency", encoding="jsonschema", data=json.dumps(LATENCY_SCHEMA).encode()
            ),
        )
        self.status = foxglove.Channel(
            STATUS,
            message_encoding="json",
            context=self.context,
            schema=foxglove.Schema(
                name="perception.Status", encoding="jsonschema", data=json.dumps(STATUS_SCHEMA).encode()
            ),
        )
        self.trails: dict[int, deque] = {}

    def log_frame(
        self,
        jpeg: bytes,
        capture_ns: int,
        log_time_ns: int,
        tracks: Tracks | None,
        det: Detections | None = None,
        frame_seq: int = 0,
        tracks_stamp_ns: int | None = None,
        image_format: str = "jpeg",
    ) -> None:
        """One frame: ``jpeg`` is the encoded image; message timestamps are ``capture_ns``
        (the capture stamp), the channels' log time ``log_time_ns``."""
        self.image.log(
            CompressedImage(timestamp=timestamp(capture_ns), frame_id=self.frame_id, data=jpeg, format=image_format),
            log_time=log_time_ns,
        )
        if tracks is None:
            return
        self.annotations.log(annotations(tracks, capture_ns, self.trails, frame_seq), log_time=log_time_ns)
        self.masks.log(mask_layer(tracks, capture_ns, self.frame_id), log_time=log_time_ns)
        if tracks_stamp_ns is not None:
            self.latency.log(latency_row(frame_seq, capture_ns, tracks_stamp_ns, det, tracks), log_time=log_time_ns)

    def log_status(self, status: Status, log_time_ns: int) -> None:
        self.status.log(json.loads(json.dumps(asdict(status), default=str)), log_time=log_time_ns)


def export_foxglove(run: str | Path, out: str | Path) -> dict[str, int]:
    """Write a recorded run (or any drive) as an MCAP file Foxglove opens as it is: the
    channels of :data:`TOPICS`, message timestamps and log times on the wall clock (the
    capture stamps moved by the run's clock anchor). Written to a temporary name and moved
    into place, so a failure leaves nothing half written. Returns messages per channel."""
    from perception.drives.drive_file import DriveError, DriveReader
    from perception.evaluation.latency import detections_by_frame, tracks_by_frame

    out = Path(out)
    if out.exists():
        raise DriveError(f"{out}: exists; an export never overwrites a file")
    reader = DriveReader(run)
    if not reader.counts.get("frames"):
        raise DriveError(f"{reader.path}: no camera frames to show (record the frames topic)")
    meta = reader.meta
    tracks_env = (
        {e.source.frame_seq: e for e in reader.messages("tracks") if e.source} if "tracks" in reader.counts else {}
    )
    tracks = tracks_by_frame(tracks_env.values())
    dets = detections_by_frame(reader.messages("detections")) if "detections" in reader.counts else {}
    counts = dict.fromkeys(TOPICS, 0)
    tmp = out.with_name(f".{out.name}.partial")
    tmp.unlink(missing_ok=True)
    view = FoxgloveView(frame_id=meta.camera_id or "camera")
    try:
        with foxglove.open_mcap(str(tmp), context=view.context):
            for rec in reader.records():
                seq = rec.source.frame_seq
                wall = meta.wall_ns(rec.source.capture_ns)
                t = tracks.get(seq)
                stamp = meta.wall_ns(tracks_env[seq].stamp_ns) if seq in tracks_env else None
                view.log_frame(rec.data, wall, wall, t, dets.get(seq), seq, stamp, rec.format)
                counts[IMAGE] += 1
                if t is not None:
                    counts[ANNOTATIONS] += 1
                    counts[MASKS] += 1
                    counts[LATENCY] += stamp is not None
            if "status" in reader.counts:
                for env in reader.messages("status"):
                    view.log_status(env.payload, meta.wall_ns(env.stamp_ns))  # type: ignore[arg-type]
                    counts[STATUS] += 1
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return counts

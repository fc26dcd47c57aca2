"""An overlay video of a recorded run (OpenCV): each camera frame with its tracks' masks in
their colours, boxes, ``class id`` labels on a dark background (``?`` marks a coasted
track, and the score), trails of box centres, and the model and capture-to-tracks latency of
the frame. :func:`side_by_side` puts a frame's ground truth beside its tracks."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from perception.bus.classes import CLASSES
from perception.bus.schema import Detections, GroundTruth, Track, Tracks
from perception.drives.drive_file import DriveError, DriveReader
from perception.outputs.foxglove_scene import TRAIL, track_colour


def draw(
    image: np.ndarray, tracks: Tracks | None, trails: dict[int, deque], caption: str, scores: bool = True
) -> np.ndarray:
    """``image`` (BGR) with the overlay drawn on a copy (``scores``: in the labels)."""
    out = image.copy()
    alive = set()
    for t in tracks.tracks if tracks is not None else ():
        alive.add(t.track_id)
        bgr = tuple(int(255 * c) for c in track_colour(t.track_id)[::-1])
        if t.mask is not None:
            m = mask_utils.decode(t.mask.to_coco()).astype(bool)
            if m.shape == out.shape[:2]:
                out[m] = (0.55 * out[m] + 0.45 * np.array(bgr)).astype(np.uint8)
        x0, y0, x1, y1 = (int(round(v)) for v in t.box_xyxy)
        cv2.rectangle(out, (x0, y0), (x1, y1), bgr, 1 if t.predicted else 2)
        trail = trails.setdefault(t.track_id, deque(maxlen=TRAIL))
        trail.append(((x0 + x1) // 2, (y0 + y1) // 2))
        if len(trail) > 1:
            cv2.polylines(out, [np.array(trail, np.int32)], False, bgr, 1)
        name = CLASSES[t.class_id] if 0 <= t.class_id < len(CLASSES) else str(t.class_id)
        label = f"{name} {t.track_id}" + (f" {t.score:.2f}" if scores else "") + (" ?" if t.predicted else "")
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        ty = max(th + 2, y0 - 2)
        cv2.rectangle(out, (x0, ty - th - 2), (x0 + tw + 2, ty + 2), (0, 0, 0), -1)
        cv2.putText(out, label, (x0 + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.4, bgr, 1, cv2.LINE_AA)
    for tid in [k for k in trails if k not in alive]:
        del trails[tid]
    cv2.rectangle(out, (0, 0), (min(out.shape[1], 8 + 7 * len(caption)), 18), (0, 0, 0), -1)
    cv2.putText(out, caption, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def render_run(run: str | Path, out: str | Path, fps: float = 0.0) -> int:
    """Write the overlay video of ``run`` to ``out`` (``.mp4``, MPEG-4); returns the number
    of frames. The frame rate is the drive's (or ``fps``)."""
    reader = DriveReader(run)
    if not reader.counts.get("frames"):
        raise DriveError(f"{reader.path}: no camera frames to draw on (record the frames topic)")
    tracks_env = (
        {e.source.frame_seq: e for e in reader.messages("tracks") if e.source} if "tracks" in reader.counts else {}
    )
    dets = (
        {e.source.frame_seq: e.payload for e in reader.messages("detections") if e.source}
        if "detections" in reader.counts
        else {}
    )
    # MPEG-4's time base holds a rate of two decimals (66.679 frames/s, a run recorded at
    # --max, makes OpenCV's writer refuse to open); a video's rate needs no more
    rate = max(0.01, round(fps or reader.meta.fps or 10.0, 2))
    out = Path(out)
    tmp = out.with_name(f".{out.name}.partial{out.suffix}")
    writer = None
    trails: dict[int, deque] = {}
    n = 0
    try:
        for frame in reader.frames():
            seq = frame.source.frame_seq
            env = tracks_env.get(seq)
            det: Detections | None = dets.get(seq)  # type: ignore[assignment]
            latency = f"{(env.stamp_ns - env.source.capture_ns) / 1e6:.0f} ms" if env and env.source else "-"
            caption = f"frame {seq}  {det.model if det else 'no detections'}  capture->tracks {latency}"
            image = draw(frame.image, env.payload if env else None, trails, caption)  # type: ignore[arg-type]
            if writer is None:
                writer = cv2.VideoWriter(
                    str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), rate, (image.shape[1], image.shape[0])
                )
                if not writer.isOpened():
                    raise DriveError(f"{out}: OpenCV cannot write an MPEG-4 video here")
            writer.write(image)
            n += 1
        if writer is not None:
            writer.release()
            writer = None
        tmp.replace(out)
    finally:
        if writer is not None:
            writer.release()
        tmp.unlink(missing_ok=True)
    return n


def gt_as_tracks(gt: GroundTruth) -> Tracks:
    """Ground truth drawn like tracks (instance ids as track ids; ignore regions left out)."""
    return Tracks(
        gt.image_width,
        gt.image_height,
        tuple(
            Track(
                track_id=i.instance_id,
                state="confirmed",
                class_id=i.class_id,
                score=1.0,
                box_xyxy=i.box_xyxy,
                mask=i.mask,
            )
            for i in gt.instances
            if not i.ignore
        ),
    )


def side_by_side(image: np.ndarray, gt: GroundTruth | None, tracks: Tracks, seq: int) -> np.ndarray:
    """Ground truth (left) and tracks (right) of one frame."""
    left = draw(image, gt_as_tracks(gt) if gt is not None else None, {}, f"frame {seq} ground truth", scores=False)
    coasting = sum(t.predicted for t in tracks.tracks)
    right = draw(image, tracks, {}, f"frame {seq} tracks: {len(tracks.tracks)} ({coasting} coasting, ?)")
    return np.hstack([left, np.full((image.shape[0], 4, 3), 255, np.uint8), right])

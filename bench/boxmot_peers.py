"""Public trackers from the ``boxmot`` package behind our tracker's interface, for the bench.

``BoxmotTracker(name, fps).update(detections, stamp_ns) -> Tracks``: the detections go to
boxmot as ``(n, 6)`` rows ``x0, y0, x1, y1, score, class`` (every detection: each tracker
applies its own score thresholds, as in its defaults); each box it outputs carries the
index of the detection it matched, and the track is given that detection's mask, so that
the mask-based scores compare association alone. No ReID and no weights (BoT-SORT with
``use_embeddings=False``), and no camera-motion compensation (the bench frames are
blank; our tracker has none either). boxmot counts frames, not time: ``stamp_ns`` is
ignored and a dropped frame is simply a frame it does not see, like the box-IoU baseline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from perception.bus.schema import Detections, Track, Tracks


def _factories() -> dict[str, Callable[[int], object]]:
    from boxmot import BotSort, ByteTrack, OcSort

    logging.getLogger("boxmot").setLevel(logging.WARNING)  # one INFO line per tracker made
    return {
        "bytetrack": lambda fps: ByteTrack(frame_rate=fps),
        "botsort": lambda fps: BotSort(frame_rate=fps, use_embeddings=False, use_cmc=False),
        "ocsort": lambda fps: OcSort(),
    }


def available() -> list[str]:
    """Names of the boxmot trackers that can be made here ([] without the package)."""
    try:
        return list(_factories())
    except ImportError:
        return []


class BoxmotTracker:
    """One boxmot tracker (``bytetrack``, ``botsort`` or ``ocsort``) on our messages."""

    def __init__(self, name: str, fps: float = 30.0) -> None:
        self.tracker = _factories()[name](max(1, round(fps)))
        self._frame: np.ndarray | None = None

    def update(self, detections: Detections, stamp_ns: int) -> Tracks:
        dets = detections.instances
        rows = np.array([[*d.box_xyxy, d.score, d.class_id] for d in dets], dtype=np.float32).reshape(-1, 6)
        h, w = detections.image_height, detections.image_width
        if self._frame is None or self._frame.shape[:2] != (h, w):
            self._frame = np.zeros((h, w, 3), np.uint8)
        out = np.asarray(self.tracker.update(rows, self._frame)).reshape(-1, 8)  # type: ignore[attr-defined]
        tracks = []
        for x0, y0, x1, y1, tid, score, cls, det in out:
            d = dets[int(det)]
            tracks.append(
                Track(
                    track_id=int(tid) + 1,
                    state="confirmed",
                    class_id=int(cls),
                    score=float(min(max(score, 0.0), 1.0)),
                    box_xyxy=(float(x0), float(y0), float(x1), float(y1)),
                    mask=d.mask,
                    hits=1,
                )
            )
        return Tracks(image_width=w, image_height=h, tracks=tuple(tracks))

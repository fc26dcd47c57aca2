"""The baseline the tracker is compared with: SORT-style box-only tracking.

Hungarian matching on box IoU, one pass over detections above a score threshold, a
constant-velocity Kalman filter stepped by one nominal frame (``1 / fps``) per update
whatever the real time, track age counted in frames. This is how the common box trackers
behave; it shares the Kalman step and the output format with ours so that only the
association, the timing and the life cycle differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from perception.bus.schema import Detections, Track, Tracks
from perception.tracking import box_motion, mask_ops
from perception.tracking.box_motion import MotionNoise


@dataclass
class _BoxTrack:
    track_id: int
    motion: np.ndarray
    class_id: int
    hits: int = 1
    misses: int = 0


class IouBaselineTracker:
    def __init__(
        self,
        fps: float = 30.0,
        score_threshold: float = 0.5,
        match_iou: float = 0.3,
        max_age_frames: int = 30,
        min_hits: int = 2,
    ) -> None:
        self.dt_s = 1.0 / fps
        self.score_threshold, self.match_iou = score_threshold, match_iou
        self.max_age_frames, self.min_hits = max_age_frames, min_hits
        self.noise = MotionNoise()
        self.tracks: list[_BoxTrack] = []
        self.next_id = 1

    def update(self, detections: Detections, stamp_ns: int) -> Tracks:
        """``stamp_ns`` is ignored: every call is one frame of ``1 / fps``."""
        dets = [d for d in detections.instances if d.score >= self.score_threshold]
        if self.tracks:
            states = box_motion.predict(np.stack([t.motion for t in self.tracks]), self.dt_s, self.noise)
            for t, s in zip(self.tracks, states, strict=True):
                t.motion = s
        matches: list[tuple[int, int]] = []
        if self.tracks and dets:
            iou = mask_ops.box_iou(
                box_motion.boxes_xyxy(np.stack([t.motion for t in self.tracks])), np.array([d.box_xyxy for d in dets])
            )
            rows, cols = linear_sum_assignment(-iou)
            matches = [(r, c) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= self.match_iou]
        out = []
        matched_t, matched_d = {r for r, _ in matches}, {c for _, c in matches}
        for r, c in matches:
            t, d = self.tracks[r], dets[c]
            t.motion = box_motion.update(t.motion[None], np.array([d.box_xyxy]), self.noise)[0]
            t.hits, t.misses, t.class_id = t.hits + 1, 0, d.class_id
            if t.hits >= self.min_hits:
                out.append(
                    Track(
                        track_id=t.track_id,
                        state="confirmed",
                        class_id=d.class_id,
                        score=d.score,
                        box_xyxy=d.box_xyxy,
                        mask=d.mask,
                        hits=t.hits,
                    )
                )
        for i, t in enumerate(self.tracks):
            if i not in matched_t:
                t.misses += 1
        self.tracks = [t for t in self.tracks if t.misses <= self.max_age_frames]
        for j, d in enumerate(dets):
            if j not in matched_d:
                motion = box_motion.initiate(np.array([d.box_xyxy]), self.noise)[0]
                self.tracks.append(_BoxTrack(self.next_id, motion, d.class_id))
                self.next_id += 1
        return Tracks(image_width=detections.image_width, image_height=detections.image_height, tracks=tuple(out))

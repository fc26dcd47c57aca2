"""Temporal instance tracker: mask-aware, timestamp-driven, with stable ids.

``Tracker.update(detections, stamp_ns) -> Tracks`` is pure logic (no clock, no I/O).

- Association: mask IoU between the detection's mask and the track's last mask carried
  onto the Kalman-predicted box, blended (``mask_weight``) with the IoU of the
  Kalman-predicted box; box IoU alone where either side has no mask; solved with SciPy's
  ``linear_sum_assignment``. Class rule: a detection of another
  class only matches when the overlap is at least ``class_switch_iou`` (detectors flicker
  between car and truck); the track's class is the score-weighted vote of its detections.
- Two score passes as in ByteTrack: confident detections against confirmed and lost tracks;
  low-score detections against confirmed tracks still unmatched (an occluded object scores
  low and would otherwise be lost); the remaining confident detections against tentative
  tracks; then a recovery pass: lost tracks against confident detections still left, on the
  Mahalanobis distance of the box centre and size (an object coming out from behind another
  overlaps its carried mask little). Only confident detections start tracks.
- Motion: constant-velocity Kalman filter on the box (:mod:`perception.tracking.box_motion`), stepped
  by the real time between stamps, so variable frame rates and dropped frames are normal.
- Life cycle in seconds: tentative -> confirmed after ``min_hits`` matches, or at once when
  started from a detection scoring at least ``confirm_score`` with no live track near it (a
  confident detection away from every track is a new object; one near a track may be that
  track's object badly segmented, and waits for a second hit); a tentative
  track unseen for ``tentative_lost_s`` is removed; a confirmed track not matched in a frame
  is lost (coasting: predicted box, mask carried forward and flagged ``predicted``) and is
  removed after ``lost_time_s`` unseen. Removed tracks are reported once with state
  ``removed``. Ids count up from 1 and are never reused; ``epoch`` tells restarts apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from perception.bus.records import record
from perception.bus.schema import Box, Detections, Instance, Rle, Track, Tracks
from perception.calibration.ground_plane import GroundPosition
from perception.tracking import box_motion, mask_ops
from perception.tracking.tracker_config import TrackerConfig

#: Optional ground-plane projection: (box_xyxy, mask) -> position in metres in the robot
#: frame with an above-the-horizon flag (see :func:`perception.calibration.ground_plane.ground_position`).
GroundProjector = Callable[[Box, Rle | None], GroundPosition | None]


class StaleStamp(ValueError):
    """A frame stamped earlier than the previous one."""


@dataclass
class TrackerStats:
    """Running counts, published in the tracker node's status."""

    frames: int = 0
    ids_issued: int = 0
    removed: int = 0
    matched_high: int = 0
    matched_low: int = 0
    class_switches: int = 0
    recovered: int = 0
    recovered_by_motion: int = 0
    last_dt_s: float = 0.0
    max_dt_s: float = 0.0


@dataclass
class _Track:
    """Mutable state of one live track (internal to :class:`Tracker`)."""

    track_id: int
    motion: np.ndarray  # (5, 4) float64, see perception.tracking.box_motion
    first_ns: int
    last_seen_ns: int
    score: float
    class_votes: dict[int, float]
    mask: Rle | None  # last observed mask, camera pixels
    mask_centre: np.ndarray  # (2,) float64: centre of the detected box that came with ``mask``
    hits: int = 1
    state: str = "tentative"
    box_xyxy: Box = (0.0, 0.0, 0.0, 0.0)  # output box of this frame
    out_mask: Rle | None = None  # output mask of this frame
    predicted: bool = False
    _carried: dict | None = field(default=None, repr=False)
    _shift: tuple[int, int] | None = field(default=None, repr=False)  # carried mask's move this frame
    #: the mask moved ahead of its frame (:meth:`Tracker.prepare`): (that mask, its move, the result)
    _ahead: tuple[Rle, tuple[int, int], dict] | None = field(default=None, repr=False)

    class_id: int = -1  # the class with the most votes (ties: the lowest id); set by vote()

    def __post_init__(self) -> None:
        self.class_id = max(self.class_votes.items(), key=lambda kv: (kv[1], -kv[0]))[0]

    def vote(self, class_id: int, score: float) -> None:
        """Add a detection's score to its class's votes and update the winner."""
        votes = self.class_votes[class_id] = self.class_votes.get(class_id, 0.0) + score
        best = self.class_votes[self.class_id] if class_id != self.class_id else -1.0
        if class_id != self.class_id and (votes > best or (votes == best and class_id < self.class_id)):
            self.class_id = class_id

    def carried_mask(self) -> dict | None:
        """The last mask moved onto the predicted box (its detected box centre onto the
        predicted centre; cached per frame): carried by the filtered motion alone it would
        keep the last detection's own error, which the filtered box has averaged out."""
        if self.mask is None:
            return None
        if self._carried is None:
            if self._shift is None:
                self._shift = tuple(np.rint(self.motion[box_motion.POS, :2] - self.mask_centre).astype(int).tolist())
            ahead = self._ahead
            if ahead is not None and ahead[0] is self.mask and ahead[1] == self._shift:
                self._carried = ahead[2]  # moved ahead by the same amount: the same result
            else:
                self._carried = mask_ops.translate(self.mask.to_coco(), *self._shift)
        return self._carried


def _assign(sim: np.ndarray, rows: list[int], cols: list[int], min_sim: float) -> list[tuple[int, int]]:
    """Hungarian assignment maximising ``sim`` over ``rows`` x ``cols``, keeping pairs with
    similarity at least ``min_sim`` (and above 0). Returns (row, col) index pairs of ``sim``."""
    if not rows or not cols:
        return []
    sub = sim.take(rows, 0).take(cols, 1)  # what sim[np.ix_(rows, cols)] is, in 1.5 instead of 7 us
    r, c = linear_sum_assignment(-sub)
    floor = max(min_sim, 1e-9)
    return [(rows[i], cols[j]) for i, j in zip(r, c, strict=True) if sub[i, j] >= floor]


def boxes_near(a_xyxy: np.ndarray, b_xyxy: np.ndarray, grow: float) -> np.ndarray:
    """``(n, m)`` bool: box ``i`` of ``a`` and box ``j`` of ``b``, each grown on every side by
    ``grow`` times its own width and height, overlap. (A few lines of NumPy: the runtime has
    no torch for torchvision's box ops.)"""

    def grown(box: np.ndarray) -> np.ndarray:
        size = np.concatenate([box[:, 2:] - box[:, :2]] * 2, axis=1)
        return box + grow * size * np.array([-1.0, -1.0, 1.0, 1.0])

    a, b = grown(a_xyxy)[:, None, :], grown(b_xyxy)[None, :, :]
    return (np.minimum(a[..., 2], b[..., 2]) > np.maximum(a[..., 0], b[..., 0])) & (
        np.minimum(a[..., 3], b[..., 3]) > np.maximum(a[..., 1], b[..., 1])
    )


class Tracker:
    """Online multi-object tracker. One instance per camera; not thread-safe."""

    def __init__(
        self, cfg: TrackerConfig | None = None, epoch: int | None = None, ground: GroundProjector | None = None
    ) -> None:
        self.cfg = cfg or TrackerConfig()
        self.cfg.validate()
        self.noise = self.cfg.motion_noise()
        #: tells tracker restarts apart: by default the wall clock in ms at construction
        self.epoch = int(time.time_ns() // 1_000_000) if epoch is None else int(epoch)
        self.ground = ground
        self.stats = TrackerStats()
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._last_ns: int | None = None
        #: prepare's prediction: (stamp, the tracks' ids, their states, their masks' moves)
        self._predicted: tuple[int, list[int], np.ndarray, list[tuple[int, int]]] | None = None

    # ------------------------------------------------------------------ public
    def update(self, detections: Detections, stamp_ns: int) -> Tracks:
        """Advance to ``stamp_ns`` (capture time, ns) with this frame's detections.

        Raises :class:`StaleStamp` if ``stamp_ns`` is earlier than the previous frame's.
        """
        if self._last_ns is not None and stamp_ns < self._last_ns:
            raise StaleStamp(f"frame stamped {stamp_ns} ns is older than the previous one ({self._last_ns} ns)")
        dt_s = 0.0 if self._last_ns is None else (stamp_ns - self._last_ns) / 1e9
        self._last_ns = stamp_ns
        self.stats.frames += 1
        self.stats.last_dt_s = dt_s
        self.stats.max_dt_s = max(self.stats.max_dt_s, dt_s)

        tracks = self._tracks
        ahead, self._predicted = self._predicted, None
        if tracks:
            if ahead is not None and ahead[0] == stamp_ns and ahead[1] == [id(t) for t in tracks]:
                states, shifts = ahead[2], ahead[3]  # predicted by prepare for this very stamp
            else:
                states, shifts = self._predict(tracks, dt_s)
            for t, s, shift in zip(tracks, states, shifts, strict=True):
                t.motion, t._carried, t._shift = s, None, shift
        dets = [d for d in detections.instances if d.score >= self.cfg.low_score]
        sim = self._similarity(tracks, dets)
        matches = self._match(tracks, dets, sim)

        matched_t = {ti for ti, _ in matches}
        matched_d = {di for _, di in matches}
        if matches:
            self._observe([tracks[ti] for ti, _ in matches], [dets[di] for _, di in matches], stamp_ns)
        removed: list[_Track] = []
        for i, t in enumerate(tracks):
            if i not in matched_t:
                self._coast(t, stamp_ns, removed)
        self._tracks = [t for t in tracks if t.state != "removed"]
        born = [d for j, d in enumerate(dets) if j not in matched_d and d.score >= self.cfg.new_track_score]
        if born:
            isolated = self._isolated(born)
            for d, alone in zip(born, isolated, strict=True):
                self._start(d, stamp_ns, confirmed=bool(alone) and d.score >= self.cfg.confirm_score)
        out = [self._to_msg(t, stamp_ns) for t in self._tracks] + [self._to_msg(t, stamp_ns) for t in removed]
        return Tracks(
            image_width=detections.image_width,
            image_height=detections.image_height,
            tracks=tuple(out),
            epoch=self.epoch,
        )

    def prepare(self, stamp_ns: int) -> None:
        """Work ahead for a frame expected at ``stamp_ns`` (while the tracker waits for its
        detections): the tracks predicted to then, and each one's mask moved to where the
        track is predicted. The next :meth:`update` takes the prediction when its frame has
        that very stamp (the same computation on the same states), and a moved mask wherever
        its own prediction moves the mask by the same whole pixels (a mask's move is a
        function of the mask and the move alone); it does the rest itself, so its outputs
        are those of an update without this, and only the time it takes differs (carrying
        the masks is most of an update)."""
        tracks = self._tracks
        if not tracks or self._last_ns is None or stamp_ns < self._last_ns:
            return
        states, shifts = self._predict(tracks, (stamp_ns - self._last_ns) / 1e9)
        self._predicted = (stamp_ns, [id(t) for t in tracks], states, shifts)
        for t, shift in zip(tracks, shifts, strict=True):
            if t.mask is not None:
                t._ahead = (t.mask, shift, mask_ops.translate(t.mask.to_coco(), *shift))

    def _predict(self, tracks: list[_Track], dt_s: float) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """The tracks' Kalman states predicted ``dt_s`` ahead ((n, 5, 4)) and the whole-pixel
        move of each one's mask onto its predicted box."""
        states = box_motion.predict(np.stack([t.motion for t in tracks]), dt_s, self.noise)
        shifts = np.rint(states[:, box_motion.POS, :2] - np.array([t.mask_centre for t in tracks]))
        return states, [(a, b) for a, b in shifts.astype(int).tolist()]

    def live_ids(self) -> list[int]:
        return [t.track_id for t in self._tracks]

    # ------------------------------------------------------------------ association
    def _similarity(self, tracks: list[_Track], dets: list[Instance]) -> np.ndarray:
        """``(n_tracks, n_dets)`` overlap: mask IoU where both sides have a mask, box IoU of
        the predicted box otherwise; zeroed across classes unless at least ``class_switch_iou``."""
        if not tracks or not dets:
            return np.zeros((len(tracks), len(dets)))
        pred_boxes = box_motion.boxes_xyxy(np.stack([t.motion for t in tracks]))
        det_boxes = np.array([d.box_xyxy for d in dets], dtype=np.float64)
        sim = mask_ops.box_iou(pred_boxes, det_boxes)
        # masks only where the boxes meet at all: carrying a mask forward costs ~0.1 ms
        near = sim.max(1) > 0
        ti = [i for i, t in enumerate(tracks) if t.mask is not None and near[i]] if self.cfg.use_masks else []
        dj = [j for j, d in enumerate(dets) if d.mask is not None]
        if ti and dj:
            track_masks = [tracks[i].carried_mask() for i in ti]
            det_masks = [dets[j].mask.to_coco() for j in dj]  # type: ignore[union-attr]
            iou = mask_ops.mask_iou(track_masks, det_masks)
            # blend with the IoU of the Kalman-filtered box: a carried mask is one noisy
            # observation, the filtered box averages many; the mask adds the shape. Mask
            # weight 0.25 was chosen on scenes 100-104 of both scenarios (bench/tracking.py
            # reports scenes 0-4): HOTA crowd 0.669 -> 0.675, urban 0.720 -> 0.727 against
            # 0.5; box IoU alone (0) and 0.75 were worse in crowd
            rows = np.asarray(ti)[:, None]  # with dj: the (ti x dj) block, without np.ix_'s cost
            box = sim[rows, dj]
            sim[rows, dj] = self.cfg.mask_weight * iou + (1.0 - self.cfg.mask_weight) * box
        track_cls = np.array([t.class_id for t in tracks])[:, None]
        det_cls = np.array([d.class_id for d in dets])[None, :]
        sim[(track_cls != det_cls) & (sim < self.cfg.class_switch_iou)] = 0.0
        return sim

    def _match(self, tracks: list[_Track], dets: list[Instance], sim: np.ndarray) -> list[tuple[int, int]]:
        cfg = self.cfg
        high = [j for j, d in enumerate(dets) if d.score >= cfg.high_score]
        low = [j for j, d in enumerate(dets) if d.score < cfg.high_score]
        active = [i for i, t in enumerate(tracks) if t.state in ("confirmed", "lost")]
        first = _assign(sim, active, high, cfg.match_iou)
        used_t = {i for i, _ in first}
        used_d = {j for _, j in first}
        tracked = [i for i in active if i not in used_t and tracks[i].state == "confirmed"]
        second = _assign(sim, tracked, low, cfg.low_match_iou)
        used_t |= {i for i, _ in second}
        tentative = [i for i, t in enumerate(tracks) if t.state == "tentative"]
        third = _assign(sim, tentative, [j for j in high if j not in used_d], cfg.match_iou)
        used_d |= {j for _, j in third}
        fourth: list[tuple[int, int]] = []
        if cfg.recovery_gate > 0:  # 0 turns the recovery pass off
            lost = [i for i in active if i not in used_t and tracks[i].state == "lost"]
            free = [j for j in high if j not in used_d]
            fourth = self._recover(tracks, dets, lost, free)
        self.stats.matched_high += len(first) + len(third)
        self.stats.matched_low += len(second)
        self.stats.recovered_by_motion += len(fourth)
        return first + second + third + fourth

    def _recover(
        self, tracks: list[_Track], dets: list[Instance], lost: list[int], free: list[int]
    ) -> list[tuple[int, int]]:
        """Lost tracks against the confident detections left over, on the distance of the
        box (centre and size) from the prediction in standard deviations (the uncertainty
        grows while a track coasts), for objects coming out from behind others with little
        mask overlap. The size is part of the distance: after a long gap the centre gate is
        wide, and on the centre alone a small track takes a large box of another object
        whose centre happens to lie near its prediction (seen on drives with dropped frames)."""
        if not lost or not free:
            return []
        states = np.stack([tracks[i].motion for i in lost])
        pos = states[:, box_motion.POS]  # (n, 4) cx, cy, w, h
        size = np.sqrt(np.maximum(pos[:, 2] * pos[:, 3], 1.0))
        # a partly visible object's box moves and shrinks by a share of its size
        var = states[:, box_motion.P_PP] + (0.25 * size[:, None]) ** 2
        det = box_motion.xyxy_to_cxcywh(np.array([dets[j].box_xyxy for j in free]))
        dims = 4 if self.cfg.recovery_uses_size else 2
        d2 = (((pos[:, None, :dims] - det[None, :, :dims]) ** 2) / var[:, None, :dims]).sum(-1)
        same = (
            np.array([tracks[i].class_id for i in lost])[:, None] == np.array([dets[j].class_id for j in free])[None, :]
        )
        cost = np.where(same & (d2 <= self.cfg.recovery_gate), d2, 1e6)
        r, c = linear_sum_assignment(cost)
        return [(lost[a], free[b]) for a, b in zip(r, c, strict=True) if cost[a, b] < 1e6]

    # ------------------------------------------------------------------ life cycle
    def _observe(self, tracks: list[_Track], dets: list[Instance], stamp_ns: int) -> None:
        boxes = np.array([d.box_xyxy for d in dets], dtype=np.float64)
        states = box_motion.update(np.stack([t.motion for t in tracks]), boxes, self.noise)
        centres = box_motion.xyxy_to_cxcywh(boxes)[:, :2]
        for t, d, s, box, centre in zip(tracks, dets, states, boxes.tolist(), centres, strict=True):
            if d.class_id != t.class_id:
                self.stats.class_switches += 1
            if t.state == "lost":
                self.stats.recovered += 1
            t.motion, t._carried, t._shift = s, None, None
            t.last_seen_ns, t.score, t.hits = stamp_ns, float(d.score), t.hits + 1
            t.vote(d.class_id, float(d.score))
            t.box_xyxy, t.predicted = tuple(box), False  # type: ignore[assignment]
            if d.mask is not None:
                t.mask, t.mask_centre = d.mask, centre
            t.out_mask = d.mask
            if t.state == "lost" or (t.state == "tentative" and t.hits >= self.cfg.min_hits):
                t.state = "confirmed"

    def _coast(self, t: _Track, stamp_ns: int, removed: list[_Track]) -> None:
        unseen_s = (stamp_ns - t.last_seen_ns) / 1e9
        limit = self.cfg.tentative_lost_s if t.state == "tentative" else self.cfg.lost_time_s
        if unseen_s > limit:
            t.state = "removed"
            t.out_mask = None
            self.stats.removed += 1
            removed.append(t)
            return
        if t.state == "confirmed":
            t.state = "lost"
        t.box_xyxy = tuple(float(v) for v in box_motion.boxes_xyxy(t.motion[None])[0])  # type: ignore[assignment]
        carried = t.carried_mask()
        # the record of a mask moved here by pycocotools needs none of the checks that guard
        # against other processes' input (they cost more than the rest of an update)
        t.out_mask = None if carried is None else Rle.trusted(carried)
        t.predicted = True

    def _isolated(self, dets: list[Instance]) -> np.ndarray:
        """``(n,)`` bool: no live track's box (detected or predicted this frame) comes near the
        detection's box (both grown by half their size on every side)."""
        if not self._tracks:
            return np.ones(len(dets), dtype=bool)
        boxes = np.array([t.box_xyxy for t in self._tracks], dtype=np.float64)
        return ~boxes_near(boxes, np.array([d.box_xyxy for d in dets], dtype=np.float64), 0.5).any(0)

    def _start(self, d: Instance, stamp_ns: int, confirmed: bool = False) -> None:
        motion = box_motion.initiate(np.array([d.box_xyxy], dtype=np.float64), self.noise)[0]
        t = _Track(
            track_id=self._next_id,
            motion=motion,
            first_ns=stamp_ns,
            last_seen_ns=stamp_ns,
            score=float(d.score),
            class_votes={d.class_id: float(d.score)},
            mask=d.mask,
            mask_centre=motion[box_motion.POS, :2].copy(),
            box_xyxy=tuple(float(v) for v in d.box_xyxy),
            out_mask=d.mask,
        )  # type: ignore[arg-type]
        if self.cfg.min_hits <= 1 or confirmed:
            t.state = "confirmed"
        self._next_id += 1
        self.stats.ids_issued += 1
        self._tracks.append(t)

    def _to_msg(self, t: _Track, stamp_ns: int) -> Track:
        mask = t.out_mask
        g = self.ground(t.box_xyxy, mask) if self.ground is not None and t.state != "removed" else None
        vx, vy = t.motion[box_motion.VEL, :2].tolist()
        return record(
            Track,
            track_id=t.track_id,
            state=t.state,
            class_id=t.class_id,
            score=t.score,
            box_xyxy=t.box_xyxy,
            mask=mask,
            velocity_px_s=(vx, vy),
            age_s=(stamp_ns - t.first_ns) / 1e9,
            hits=t.hits,
            predicted=t.predicted,
            ground_xy_m=None if g is None else (float(g.x_m), float(g.y_m)),
            ground_above_horizon=bool(g.above_horizon) if g is not None else False,
        )

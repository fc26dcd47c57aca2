"""The tracker node's logic: ``detections`` in, ``tracks`` out (see :mod:`perception.tracking.tracker`).

Frames are tracked at their capture stamp (``source.capture_ns``), so queueing and inference
delays do not distort velocities. A frame older than the previous one by less than
:data:`REWIND_S` is out of order: it is dropped and counted. A larger jump backwards, or a
new camera id, means the source restarted (a replay looping, a camera reconnecting): the
tracker restarts with a new ``epoch``, so subscribers know ids from before do not carry on.

While it waits for the next detections the node works ahead (``prepare``): the tracks'
masks moved to where they are predicted at the next frame's expected capture stamp (the last
one plus the median spacing of the last frames), which the update then finds done whenever
its own prediction moves a mask by the same pixels (:meth:`Tracker.prepare`; the outputs are
the same either way). In the live pipeline on the 2-core machine this takes most of the
tracker's step off the frame's path.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Sequence

from perception.bus.pubsub import Received
from perception.bus.schema import Box, Detections, Rle
from perception.calibration.camera_file import load_calibration
from perception.calibration.ground_plane import GroundPosition, ground_position
from perception.node.loop import Outgoing
from perception.tracking.tracker import GroundProjector, Tracker, TrackerConfig

REWIND_S = 1.0
#: frame spacings the expected next capture stamp is estimated from (their median)
SPACINGS = 8


def _ground_projector(calib_file: str) -> GroundProjector:
    """Ground positions from a calibration file with extrinsics: each track's mask
    bottom-centre (its box where there is no mask) on a flat ground, in the robot frame."""
    calib = load_calibration(calib_file)
    assert calib.extrinsics is not None  # TrackerConfig.validate checks it

    def project(box: Box, mask: Rle | None) -> GroundPosition:
        return ground_position(mask if mask is not None else box, calib.camera, calib.extrinsics)  # type: ignore[arg-type]

    return project


class TrackerLogic:
    inputs: tuple[str, ...] = ("detections",)
    outputs: tuple[str, ...] = ("tracks",)

    def __init__(self, cfg: TrackerConfig) -> None:
        self.cfg = cfg
        self.ground = _ground_projector(cfg.calib) if cfg.calib else None
        self.tracker = Tracker(cfg, ground=self.ground)
        self.camera_id: str | None = None
        self.last_stamp_ns: int | None = None
        self.restarts = 0
        self.out_of_order = 0
        self.invalid = 0
        self.last_counts = {"confirmed": 0, "tentative": 0, "lost": 0}
        self.spacings_ns: deque[int] = deque(maxlen=SPACINGS)
        self._prepared_for: int | None = None  # the capture stamp worked ahead for
        self.prepared = 0

    def next_wakeup_ns(self, now_ns: int) -> int | None:
        return None

    def expected_stamp_ns(self) -> int | None:
        """The capture stamp the next detections are expected to have, or None before two frames."""
        if self.last_stamp_ns is None or not self.spacings_ns:
            return None
        return self.last_stamp_ns + int(statistics.median(self.spacings_ns))

    def prepare(self, now_ns: int) -> None:
        """Before the node waits: work ahead for the next frame, once per frame."""
        expected = self.expected_stamp_ns()
        if expected is not None and expected != self._prepared_for:
            self._prepared_for = expected
            self.tracker.prepare(expected)
            self.prepared += 1

    def _restart(self) -> None:
        epoch = max(int(time.time_ns() // 1_000_000), self.tracker.epoch + 1)
        self.tracker = Tracker(self.cfg, epoch=epoch, ground=self.ground)
        self.restarts += 1
        self.spacings_ns.clear()
        self.last_stamp_ns = None  # no spacing across a restart

    def step(self, now_ns: int, msg: Received | None) -> Sequence[Outgoing]:
        if msg is None or msg.topic != "detections":
            return []
        env = msg.envelope
        if not env.valid or not isinstance(env.payload, Detections):
            self.invalid += 1
            return []
        src = env.source
        stamp_ns = src.capture_ns if src is not None else env.stamp_ns
        camera_id = src.camera_id if src is not None else ""
        if self.last_stamp_ns is not None:
            rewound = self.last_stamp_ns - stamp_ns > REWIND_S * 1e9
            if rewound or camera_id != self.camera_id:
                self._restart()
            elif stamp_ns < self.last_stamp_ns:
                self.out_of_order += 1
                return []
        if self.last_stamp_ns is not None and stamp_ns > self.last_stamp_ns:
            self.spacings_ns.append(stamp_ns - self.last_stamp_ns)
        self.camera_id, self.last_stamp_ns = camera_id, stamp_ns
        tracks = self.tracker.update(env.payload, stamp_ns)
        counts = {"confirmed": 0, "tentative": 0, "lost": 0, "removed": 0}
        for t in tracks.tracks:
            counts[t.state] += 1
        self.last_counts = counts
        return [Outgoing("tracks", tracks, src)]

    def counters(self) -> dict[str, int | float | str | bool]:
        s = self.tracker.stats
        return {
            "epoch": self.tracker.epoch,
            "restarts": self.restarts,
            "out_of_order": self.out_of_order,
            "invalid_in": self.invalid,
            "tracks_confirmed": self.last_counts["confirmed"],
            "tracks_tentative": self.last_counts["tentative"],
            "tracks_lost": self.last_counts["lost"],
            "ids_issued": s.ids_issued,
            "removed": s.removed,
            "matched_high": s.matched_high,
            "matched_low": s.matched_low,
            "recovered": s.recovered,
            "recovered_by_motion": s.recovered_by_motion,
            "class_switches": s.class_switches,
            "max_dt_s": round(s.max_dt_s, 4),
            "prepared": self.prepared,
        }

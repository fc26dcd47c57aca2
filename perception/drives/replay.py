"""The replay node's logic: a recorded drive published in place of the camera.

Frames (and their ground truth, on ``gt``) go out with the drive's original timing scaled
by ``rate`` (``rate: 0`` = as fast as possible). Each published frame gets a fresh capture
stamp on this machine's monotonic clock, so latency downstream is measured as if live, and a
running frame sequence number (the ground truth goes out with the same ``Source``, so a
recording of the run pairs outputs with ground truth by ``frame_seq``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from perception.bus.pubsub import Received, header_for
from perception.bus.schema import GroundTruth, Source
from perception.drives.drive_file import DriveError, DriveReader, RecordedFrame
from perception.node.loop import Outgoing

log = logging.getLogger(__name__)

DECODE_MARGIN_NS = 2_000_000  # a frame decoded ahead is ready this long before it is due, at least
#: in real time a frame's ground truth goes out this share of the frame spacing after the
#: frame: not on the frame's way through the pipeline (its readers decode it, masks and all,
#: on the CPUs the frame's nodes are waking on), and before the next frame
GT_AFTER = 0.75


@dataclass(frozen=True)
class ReplayConfig:
    """``drive``: MCAP drive to play; ``rate``: speed factor (0 = as fast as possible);
    ``start_s``/``end_s``: window in seconds from the drive's first frame (``end_s`` 0 = to
    the end); ``loop``: play again from the start; ``gt``: also publish ground truth;
    ``repeat``: play the window this many times (``loop`` repeats forever);
    ``start_delay_s``: pause before the first frame so subscribers are connected."""

    drive: str
    rate: float = 1.0
    start_s: float = 0.0
    end_s: float = 0.0
    loop: bool = False
    repeat: int = 1
    gt: bool = True
    camera_id: str = ""
    start_delay_s: float = 0.5

    def validate(self) -> None:
        if self.rate < 0:
            raise ValueError(f"key 'rate' must be >= 0 (0 = as fast as possible), got {self.rate}")
        if self.repeat < 1:
            raise ValueError(f"key 'repeat' must be >= 1, got {self.repeat}")
        if self.end_s and self.end_s <= self.start_s:
            raise ValueError(f"key 'end_s' ({self.end_s}) must be after 'start_s' ({self.start_s})")
        try:
            reader = DriveReader(self.drive)
        except DriveError as e:
            raise ValueError(f"key 'drive': {e}") from None
        if reader.counts.get("frames", 0) == 0:
            raise ValueError(f"key 'drive': {self.drive} holds no frames")


class ReplayLogic:
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ("frames", "gt")

    def __init__(self, cfg: ReplayConfig) -> None:
        self.cfg = cfg
        self.reader = DriveReader(cfg.drive)
        self.gt = self.reader.ground_truth() if cfg.gt else {}
        self.camera_id = cfg.camera_id or self.reader.meta.camera_id
        self.records: Iterator[RecordedFrame] = self._window()
        self.pending: RecordedFrame | None = next(self.records, None)
        self.t0_drive_ns: int | None = None
        self.t0_wall_ns: int | None = None
        self.published = 0
        self.loops = 0
        self.started_ns: int | None = None
        self._decoded: tuple[RecordedFrame, np.ndarray | None] | None = None  # the pending frame, decoded ahead
        self._decode_ns = 0  # how long the last decode ahead took
        self._went_out = False  # the pending frame went out; the next record is read while waiting
        self._gt_out: tuple[int, Outgoing] | None = None  # the last frame's ground truth and when it goes
        self._last_capture_ns: int | None = None
        #: set by the node: the next shared-memory slot of an output topic as an array of a
        #: shape, or None; a frame decoded ahead is put there before it is due, so that it
        #: goes out without a copy at its due time
        self.claim: Callable[[str, tuple[int, ...]], np.ndarray | None] | None = None

    def _window(self) -> Iterator[RecordedFrame]:
        first = None
        for rec in self.reader.records():
            first = rec.source.capture_ns if first is None else first
            t = (rec.source.capture_ns - first) / 1e9
            if t < self.cfg.start_s:
                continue
            if self.cfg.end_s and t > self.cfg.end_s:
                return
            yield rec

    def _due_ns(self, rec: RecordedFrame) -> int:
        if self.t0_drive_ns is None or self.t0_wall_ns is None or self.cfg.rate == 0:
            return 0
        return self.t0_wall_ns + int((rec.source.capture_ns - self.t0_drive_ns) / self.cfg.rate)

    @property
    def finished(self) -> bool:
        """The drive went out whole: no frame left (none waiting for the node to move on
        from it) and no ground truth still to send."""
        return self.pending is None and self._gt_out is None and not self._went_out

    def _advance(self) -> None:
        """Move on from the frame that went out. Done while waiting for the next frame, not
        between a frame's capture stamp and its send: reading the next record may mean
        decompressing an MCAP chunk."""
        if not self._went_out:
            return
        self._went_out = False
        self.pending = next(self.records, None)
        if self.pending is None and (self.cfg.loop or self.loops + 1 < self.cfg.repeat):
            self.loops += 1
            self.records = self._window()
            self.pending = next(self.records, None)
            self.t0_drive_ns = None  # the next loop starts its own timeline
            self._last_capture_ns = None

    def next_wakeup_ns(self, now_ns: int) -> int | None:
        self._advance()
        times = [] if self._gt_out is None else [self._gt_out[0]]
        if self.pending is not None:
            if self.started_ns is None:
                self.started_ns = now_ns + int(self.cfg.start_delay_s * 1e9)
            times.append(max(self.started_ns, self._due_ns(self.pending)))
        return min(times) if times else None

    def prepare(self, now_ns: int) -> int | None:
        """Decode the next frame while waiting for it to be due (the node calls this before
        each wait): its capture stamp is when it is due, and a decode after that would count
        as the pipeline's latency.

        In real time the decode waits until shortly before the frame is due (three times
        the last decode, plus 2 ms), and this returns when that is: decoded right after the
        previous frame went out, it took the CPU from the nodes that frame had just woken
        (a woken reader is often placed on its waker's CPU): on the 2-core machine the
        preprocess node then woke 1.35 ms after a frame went out instead of 0.57 ms (p50).

        The decoded frame goes into the next slot of the frames' shared-memory ring, when
        there is one (``claim``), so that its copy there is not on the frame's path either."""
        self._advance()
        if self.pending is None or (self._decoded is not None and self._decoded[0] is self.pending):
            return None
        due = self._due_ns(self.pending)
        start = due - 3 * self._decode_ns - DECODE_MARGIN_NS
        if self.cfg.rate > 0 and self.t0_drive_ns is not None and now_ns < start:
            return start
        t0 = time.monotonic_ns()
        try:
            image = self._decode(self.pending)
            slot = self.claim("frames", image.shape) if self.claim is not None else None
            if slot is not None:
                np.copyto(slot, image)
                image = slot
            self._decoded = (self.pending, image)
        except DriveError:  # step decodes it again and reports the error as a step failure
            self._decoded = (self.pending, None)
        self._decode_ns = time.monotonic_ns() - t0
        return None

    def _decode(self, rec: RecordedFrame) -> np.ndarray:
        image = cv2.imdecode(np.frombuffer(rec.data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise DriveError(f"{self.cfg.drive}: frame {rec.source.frame_seq} does not decode")
        return image

    def step(self, now_ns: int, msg: Received | None) -> Sequence[Outgoing]:
        """The pending frame (and its ground truth at rate 0) when it is due, and the last
        frame's ground truth when its time has come (at the latest with the next frame)."""
        self._advance()
        rec = self.pending
        frame_due = rec is not None and (self.t0_drive_ns is None or now_ns >= self._due_ns(rec))
        if frame_due and rec is not None:
            return self._frame(rec, now_ns)
        if self._gt_out is not None and now_ns >= self._gt_out[0]:
            out, self._gt_out = [self._gt_out[1]], None
            return out
        return []

    def _frame(self, rec: RecordedFrame, now_ns: int) -> list[Outgoing]:
        if self.t0_drive_ns is None:
            self.t0_drive_ns, self.t0_wall_ns = rec.source.capture_ns, now_ns
        # captured when it was due on the drive's timeline (at rate 0, when it goes out), so
        # the tracker sees the drive's own frame spacing, not the scheduler's jitter
        capture_ns = self._due_ns(rec) if self.cfg.rate > 0 else time.monotonic_ns()
        self._went_out = True
        decoded, self._decoded = self._decoded, None
        image = (
            decoded[1] if decoded is not None and decoded[0] is rec and decoded[1] is not None else self._decode(rec)
        )
        src = Source(self.camera_id, self.published, capture_ns)
        self.published += 1
        out = [Outgoing("frames", header_for(image), src, image)]
        if self._gt_out is not None:  # the last frame's, not sent yet: after this frame
            out.append(self._gt_out[1])
            self._gt_out = None
        gt: GroundTruth | None = self.gt.get(rec.source.frame_seq)
        spacing = None if self._last_capture_ns is None else capture_ns - self._last_capture_ns
        self._last_capture_ns = capture_ns
        if gt is not None:
            if self.cfg.rate > 0 and spacing:
                self._gt_out = (capture_ns + int(GT_AFTER * spacing), Outgoing("gt", gt, src))
            else:  # as fast as possible, or no spacing known yet: with its frame
                out.append(Outgoing("gt", gt, src))
        return out

    def counters(self) -> dict[str, int | float | str | bool]:
        self._advance()
        return {
            "published": self.published,
            "loops": self.loops,
            "finished": self.finished,
            "frame_seq": self.published,
        }

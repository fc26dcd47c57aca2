"""Camera sources and the camera node's logic.

Sources: a V4L2/USB device (an index such as ``0`` or a path ``/dev/videoN``), a video
file, or a folder of images in name order. Each frame gets a capture stamp
(``time.monotonic_ns``) and a frame sequence number; frames are paced at ``fps``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from perception.bus.pubsub import Received, header_for
from perception.bus.schema import Source
from perception.node.loop import Outgoing

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class CameraConfig:
    """Parameters of the camera node.

    ``source``: device index (``"0"``), ``/dev/videoN``, a video file or an image folder.
    ``fps``: frames per second to publish (0 = as fast as the source delivers).
    ``loop``: start again at the end of a file or folder. ``max_frames``: stop after this
    many (0 = no limit). ``start_delay_s``: pause before the first frame so that
    subscribers connecting at start-up (ZeroMQ reconnects every 100 ms) hear it.
    ``reconnect``: a live source (a device, a network stream) that stops delivering frames,
    or cannot be opened, is opened again with back-off from ``backoff_initial_s`` doubling
    to ``backoff_max_s``, without restarting the node or the others; ``read_timeout_s``:
    how long a network stream may stall before it counts as lost. ``wait_at_start``: a live
    source that cannot be opened when the node starts is waited for (retried) instead of
    failing the launch (the default: a wrong device name is a configuration error).
    """

    source: str
    fps: float = 15.0
    loop: bool = False
    camera_id: str = "cam0"
    max_frames: int = 0
    start_delay_s: float = 0.3
    reconnect: bool = True
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    read_timeout_s: float = 3.0
    wait_at_start: bool = False

    def validate(self) -> None:
        if self.fps < 0:
            raise ValueError(f"key 'fps' must be >= 0, got {self.fps}")
        if self.max_frames < 0:
            raise ValueError(f"key 'max_frames' must be >= 0, got {self.max_frames}")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s or self.read_timeout_s <= 0:
            raise ValueError("keys 'backoff_initial_s' <= 'backoff_max_s' must be > 0 and 'read_timeout_s' > 0")
        if not _is_device(self.source) and not is_live(self.source) and not os.path.exists(self.source):
            raise ValueError(
                f"camera source {self.source!r} does not exist (expected a device index such "
                "as 0, /dev/videoN, a video file or a folder of images)"
            )


class FrameSource(Protocol):
    def read(self) -> np.ndarray | None:
        """The next ``(H, W, 3)`` uint8 BGR frame, or ``None`` at the end."""

    def rewind(self) -> None: ...

    def close(self) -> None: ...


def _is_device(source: str) -> bool:
    return source.isdigit() or source.startswith("/dev/video")


class FolderSource:
    """Images of a folder in name order. A file that does not decode raises ``ValueError``
    naming it; the next read goes on with the following file."""

    def __init__(self, folder: str) -> None:
        self.files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f"camera source folder {folder!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.index = 0

    def read(self) -> np.ndarray | None:
        if self.index >= len(self.files):
            return None
        path = self.files[self.index]
        self.index += 1
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{path}: not a readable image")
        return image

    def rewind(self) -> None:
        self.index = 0

    def close(self) -> None:
        pass


def is_live(source: str) -> bool:
    """A device or a network stream (``rtsp://``, ``http://``...): it can go away and come back."""
    return _is_device(source) or "://" in source


class CaptureSource:
    """A video file, a capture device or a network stream through OpenCV's ``VideoCapture``."""

    def __init__(self, source: str, timeout_s: float = 3.0) -> None:
        self.source = source
        self.device = _is_device(source)
        target: int | str = int(source) if source.isdigit() else source
        if "://" in source:  # a stalled stream must time out rather than block the node
            ms = int(timeout_s * 1000)
            self.cap = cv2.VideoCapture(
                target, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            )
        else:
            self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            what = "video device" if self.device else "video file"
            raise ValueError(f"could not open {what} {source!r}")

    def read(self) -> np.ndarray | None:
        ok, image = self.cap.read()
        return image if ok else None

    def rewind(self) -> None:
        if not self.device:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def close(self) -> None:
        self.cap.release()


def open_source(source: str, timeout_s: float = 3.0) -> FrameSource:
    """Open ``source`` as described in :class:`CameraConfig`."""
    if not _is_device(source) and os.path.isdir(source):
        return FolderSource(source)
    return CaptureSource(source, timeout_s)


class CameraLogic:
    """Publishes one frame per period on ``frames``.

    Pacing keeps the nominal schedule (no drift); when more than one period behind it
    starts again from now instead of bursting. A live source that stops delivering (an
    unplugged USB camera, a stalled stream) is closed and opened again with back-off; its
    status says so at once (``connected``, ``no_frames_s``, ``reconnects``), and frames
    resume with the next ``epoch`` when it is back.
    """

    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ("frames",)

    def __init__(
        self, cfg: CameraConfig, source: FrameSource | None = None, opener: Callable[[str], FrameSource] | None = None
    ) -> None:
        self.cfg = cfg
        self.opener = opener or (lambda src: open_source(src, cfg.read_timeout_s))
        self.live = is_live(cfg.source) and cfg.reconnect
        self.period_ns = int(1e9 / cfg.fps) if cfg.fps > 0 else 0
        self.due_ns: int | None = 0
        self.frame_seq = 0
        self.loops = 0
        self.finished = False
        self.epoch = 0
        self.reconnects = 0
        self.lost_ns: int | None = None  # when the live source went away
        self.last_frame_ns: int | None = None
        self._retry_ns = 0
        self._backoff_s = cfg.backoff_initial_s
        self.source: FrameSource | None = source
        if self.source is None:
            try:
                self.source = self.opener(cfg.source)
            except ValueError as e:
                if not (self.live and cfg.wait_at_start):
                    raise
                log.warning("%s; retrying", e)
                self.lost_ns = time.monotonic_ns()

    def next_wakeup_ns(self, now_ns: int) -> int | None:
        if self.finished:
            return None
        if self.source is None:
            return self._retry_ns
        return self.due_ns

    def _schedule(self, now_ns: int) -> None:
        if self.period_ns == 0:
            self.due_ns = now_ns
            return
        nxt = (self.due_ns or now_ns) + self.period_ns
        self.due_ns = nxt if nxt > now_ns - self.period_ns else now_ns + self.period_ns

    def _lost(self, now_ns: int, why: str) -> None:
        log.warning("camera %r stopped delivering frames (%s): reconnecting with back-off", self.cfg.source, why)
        if self.source is not None:
            self.source.close()
        self.source = None
        self.lost_ns = now_ns
        self._retry_ns = now_ns + int(self._backoff_s * 1e9)

    def _reopen(self, now_ns: int) -> None:
        if now_ns < self._retry_ns:
            return
        try:
            self.source = self.opener(self.cfg.source)
        except ValueError as e:
            self._backoff_s = min(self._backoff_s * 2, self.cfg.backoff_max_s)
            self._retry_ns = now_ns + int(self._backoff_s * 1e9)
            log.info("camera %r not back yet (%s); next try in %.1f s", self.cfg.source, e, self._backoff_s)
            return
        self.reconnects += 1
        self.epoch += 1
        self._backoff_s = self.cfg.backoff_initial_s
        self.due_ns = now_ns
        log.info(
            "camera %r is back (epoch %d) after %.1f s",
            self.cfg.source,
            self.epoch,
            (now_ns - (self.lost_ns or now_ns)) / 1e9,
        )
        self.lost_ns = None

    def step(self, now_ns: int, msg: Received | None) -> Sequence[Outgoing]:
        if self.source is None:
            self._reopen(now_ns)
            if self.source is None:
                return []
        if self.due_ns == 0 and self.cfg.start_delay_s > 0:
            self.due_ns = now_ns + int(self.cfg.start_delay_s * 1e9)
            return []
        if self.due_ns == 0:
            self.due_ns = now_ns
        self._schedule(now_ns)
        if self.cfg.max_frames and self.frame_seq >= self.cfg.max_frames:
            self.finished = True
            return []
        try:
            image = self.source.read()
        except (OSError, cv2.error) as e:
            if not self.live:
                raise
            self._lost(now_ns, f"{type(e).__name__}: {e}")
            return []
        if image is None and self.live:
            self._lost(now_ns, "no frame")
            return []
        if image is None and self.cfg.loop:
            self.source.rewind()
            self.loops += 1
            image = self.source.read()
        if image is None:
            self.finished = True
            log.info("camera source %r finished after %d frames", self.cfg.source, self.frame_seq)
            return []
        image = np.ascontiguousarray(image)
        src = Source(camera_id=self.cfg.camera_id, frame_seq=self.frame_seq, capture_ns=time.monotonic_ns())
        self.frame_seq += 1
        self.last_frame_ns = now_ns
        return [Outgoing("frames", header_for(image, "bgr8"), src, image)]

    def counters(self) -> dict[str, int | float | str | bool]:
        now = time.monotonic_ns()
        since = self.last_frame_ns if self.last_frame_ns is not None else self.lost_ns
        return {
            "frame_seq": self.frame_seq,
            "loops": self.loops,
            "finished": self.finished,
            "connected": self.source is not None,
            "epoch": self.epoch,
            "reconnects": self.reconnects,
            "no_frames_s": round((now - since) / 1e9, 3) if since is not None else 0.0,
        }

    def close(self) -> None:
        if self.source is not None:
            self.source.close()

"""Camera sources and the camera node's logic.

Sources: a V4L2/USB device (an index such as ``0`` or a path ``/dev/videoN``), a video
file, or a folder of images in name order. Each frame gets a capture stamp
(``time.monotonic_ns``) and a frame sequence number; frames are paced at ``fps``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from perception.bus import Received, header_for
from perception.node import Outgoing
from perception.schema import Source

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
    """

    source: str
    fps: float = 15.0
    loop: bool = False
    camera_id: str = "cam0"
    max_frames: int = 0
    start_delay_s: float = 0.3

    def validate(self) -> None:
        if self.fps < 0:
            raise ValueError(f"key 'fps' must be >= 0, got {self.fps}")
        if self.max_frames < 0:
            raise ValueError(f"key 'max_frames' must be >= 0, got {self.max_frames}")
        if not _is_device(self.source) and not os.path.exists(self.source):
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


class CaptureSource:
    """A video file or a capture device through OpenCV's ``VideoCapture``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.device = _is_device(source)
        target: int | str = int(source) if source.isdigit() else source
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


def open_source(source: str) -> FrameSource:
    """Open ``source`` as described in :class:`CameraConfig`."""
    if not _is_device(source) and os.path.isdir(source):
        return FolderSource(source)
    return CaptureSource(source)


class CameraLogic:
    """Publishes one frame per period on ``frames``.

    Pacing keeps the nominal schedule (no drift); when more than one period behind it
    starts again from now instead of bursting.
    """

    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ("frames",)

    def __init__(self, cfg: CameraConfig, source: FrameSource | None = None) -> None:
        self.cfg = cfg
        self.source = source or open_source(cfg.source)
        self.period_ns = int(1e9 / cfg.fps) if cfg.fps > 0 else 0
        self.due_ns: int | None = 0
        self.frame_seq = 0
        self.loops = 0
        self.finished = False

    def next_wakeup_ns(self, now_ns: int) -> int | None:
        return None if self.finished else self.due_ns

    def _schedule(self, now_ns: int) -> None:
        if self.period_ns == 0:
            self.due_ns = now_ns
            return
        nxt = (self.due_ns or now_ns) + self.period_ns
        self.due_ns = nxt if nxt > now_ns - self.period_ns else now_ns + self.period_ns

    def step(self, now_ns: int, msg: Received | None) -> Sequence[Outgoing]:
        if self.due_ns == 0 and self.cfg.start_delay_s > 0:
            self.due_ns = now_ns + int(self.cfg.start_delay_s * 1e9)
            return []
        if self.due_ns == 0:
            self.due_ns = now_ns
        self._schedule(now_ns)
        if self.cfg.max_frames and self.frame_seq >= self.cfg.max_frames:
            self.finished = True
            return []
        image = self.source.read()
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
        return [Outgoing("frames", header_for(image, "bgr8"), src, image)]

    def counters(self) -> dict[str, int | float | str | bool]:
        return {"frame_seq": self.frame_seq, "loops": self.loops, "finished": self.finished}

    def close(self) -> None:
        self.source.close()

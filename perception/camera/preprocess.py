"""Preprocessing: undistort camera frames (when a calibration file is given) and letterbox
them to the model input size, keeping the transform that maps model pixels back to camera
pixels.

With ``calib:``, frames are undistorted first, to the same size, with the camera matrix of
the calibration's ``projection_matrix`` (see :mod:`perception.calibration.undistort`); the
:class:`~perception.bus.schema.Letterbox` then maps model pixels to the *undistorted* camera
image, and ``FrameHeader.undistorted`` says so. Boxes and masks downstream are therefore in
undistorted camera pixels. Frames of another size than the calibration's are accepted when
they have the same aspect ratio (binning or resizing: the camera matrix is rescaled);
another aspect ratio is an error for each such frame (logged, counted, dropped).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from perception.bus.pubsub import Received, header_for
from perception.bus.schema import FrameHeader
from perception.calibration.camera_file import Calibration, load_calibration
from perception.calibration.undistort import Undistorter
from perception.geometry.letterbox import letterbox
from perception.node.loop import Outgoing


@dataclass(frozen=True)
class PreprocessConfig:
    """``width`` x ``height``: model input size in pixels; ``pad_value``: letterbox grey;
    ``calib``: camera_info YAML file (see :mod:`perception.calibration.camera_file`) to undistort
    with, empty for none. The file is loaded and checked when the launch file is."""

    width: int = 640
    height: int = 384
    pad_value: int = 114
    calib: str = ""

    def validate(self) -> None:
        if not (16 <= self.width <= 8192 and 16 <= self.height <= 8192):
            raise ValueError(f"keys 'width'/'height' must be in 16..8192, got {self.width}x{self.height}")
        if not 0 <= self.pad_value <= 255:
            raise ValueError(f"key 'pad_value' must be in 0..255, got {self.pad_value}")
        if self.calib:
            load_calibration(self.calib)  # raises CalibrationError naming file and field


class PreprocessLogic:
    """``frames`` -> ``frames.rect``: one (undistorted and) letterboxed frame per input frame.

    The undistortion maps are built once, at init for the calibration's image size (and
    once more if the frames turn out to be another size of the same aspect ratio).
    """

    # done with a frame's pixels when step returns: shared-memory frames come in place
    # (its node table row: frame_views)
    inputs: tuple[str, ...] = ("frames",)
    outputs: tuple[str, ...] = ("frames.rect",)

    def __init__(self, cfg: PreprocessConfig) -> None:
        self.cfg = cfg
        self.frames = 0
        #: set by the node: the next shared-memory slot of an output topic as an array of a
        #: shape, or None (no ring, or too large); a frame letterboxed into it goes out
        #: without a copy
        self.claim: Callable[[str, tuple[int, ...]], np.ndarray | None] | None = None
        #: the ring slots (by address) whose padding is in place, with the frame size it is for:
        #: a slot's memory is this node's alone and keeps its padding from one frame of a size
        #: to the next (0.08 ms of the step on a CPU that just woke)
        self._padded: dict[int, tuple[int, ...]] = {}
        self.calibration: Calibration | None = load_calibration(cfg.calib) if cfg.calib else None
        self.undistorter = Undistorter(self.calibration.camera) if self.calibration else None

    def undistort(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 raw frame -> undistorted frame of the same shape (identity
        without calibration)."""
        if self.undistorter is None or self.calibration is None:
            return image
        h, w = image.shape[:2]
        if self.undistorter.size != (w, h):
            self.undistorter = Undistorter(self.calibration.camera, w, h)
        return self.undistorter.apply(image)

    def next_wakeup_ns(self, now_ns: int) -> int | None:
        return None

    def step(self, now_ns: int, msg: Received | None) -> Sequence[Outgoing]:
        if msg is None or msg.pixels is None:
            return []
        header: FrameHeader = msg.envelope.payload  # type: ignore[assignment]
        image = msg.pixels
        if header.encoding == "mono8":
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif header.encoding == "rgb8":
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        image = self.undistort(image)
        slot = (
            self.claim("frames.rect", (self.cfg.height, self.cfg.width, 3))
            if self.claim is not None and image.ndim == 3 and image.shape[2] == 3
            else None
        )
        padded = False
        if slot is not None:
            padded = self._padded.get(slot.ctypes.data) == image.shape
            self._padded[slot.ctypes.data] = image.shape
        out, transform = letterbox(image, self.cfg.width, self.cfg.height, self.cfg.pad_value, out=slot, padded=padded)
        self.frames += 1
        undistorted = self.undistorter is not None or header.undistorted
        out_header = header_for(out, "bgr8", transform=transform, undistorted=undistorted)
        return [Outgoing("frames.rect", out_header, msg.envelope.source, out)]

    def counters(self) -> dict[str, int | float | str | bool]:
        return {"frames": self.frames}

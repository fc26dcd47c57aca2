"""Training samples from synthetic drives (:mod:`perception.synth`), letterboxed to the
model input exactly as the preprocess node does at run time (torch only).

Sample ``index`` is frame ``index % frames_per_drive`` of drive ``index // frames_per_drive``
(seed ``seed + drive``, scenarios cycled), so samples are a pure function of
``(seed, index)``. Drives are simulated frame by frame, so the simulator of the current
drive is kept and sequential indices cost one frame each; a jump restarts that drive.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from perception.geometry.letterbox import letterbox
from perception.synth import DriveSimulator, SynthConfig
from perception.train.data import Sample, to_sample

SCENARIOS = ("urban", "highway", "crowd")


class SynthSource:
    def __init__(
        self, width: int, height: int, seed: int, frames_per_drive: int = 40, camera: tuple[int, int] = (640, 360)
    ) -> None:
        self.width, self.height, self.seed = width, height, seed
        self.frames_per_drive = frames_per_drive
        self.base = SynthConfig(width=camera[0], height=camera[1], frames=frames_per_drive)
        self._drive = -1
        self._next_frame = 0
        self._sim: DriveSimulator | None = None

    def _simulator(self, drive: int, frame: int) -> DriveSimulator:
        if self._sim is None or drive != self._drive or frame < self._next_frame:
            cfg = replace(self.base, seed=self.seed * 100_003 + drive, scenario=SCENARIOS[drive % len(SCENARIOS)])
            self._sim, self._drive, self._next_frame = DriveSimulator(cfg), drive, 0
        return self._sim

    def sample(self, index: int) -> Sample:
        drive, frame = divmod(index, self.frames_per_drive)
        sim = self._simulator(drive, frame)
        while True:
            f = sim.next()
            self._next_frame += 1
            if self._next_frame > frame:
                break
        image, t = letterbox(f.image, self.width, self.height)
        labels = [lb for lb in f.labels if not lb.ignore]
        masks = []
        for lb in labels:
            m = cv2.resize(
                (f.ids == lb.instance_id).astype(np.uint8),
                (round(t.src_width * t.scale), round(t.src_height * t.scale)),
                interpolation=cv2.INTER_NEAREST,
            )
            full = np.zeros((self.height, self.width), bool)
            y, x = int(t.pad_y_px), int(t.pad_x_px)
            full[y : y + m.shape[0], x : x + m.shape[1]] = m > 0
            masks.append(full)
        return to_sample(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), masks, [lb.class_id for lb in labels])

"""Sample augmentation shared by every training source (NumPy/OpenCV only).

One geometric draw moves an image and its label layers together (instance-id maps or
per-instance masks): a random scale ``s`` (log-uniform in ``[scale_min, scale_max]``,
relative to the letterbox that the preprocess node applies) with a random crop or pad, and
a horizontal flip; then brightness, contrast and gamma jitter on the image. With ``s = 1``,
no flip and no jitter the output is exactly the letterboxed image the node would see.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from perception.geometry.letterbox import resize_interpolation


@dataclass(frozen=True)
class Augment:
    """Sample augmentation: scale range (1 = the node's letterbox), flip probability, and
    photometric jitter strength (0 = off; 1 = gain x[0.6, 1.5], contrast x[0.7, 1.3], gamma
    x[0.7, 1.4])."""

    scale_min: float = 1.0
    scale_max: float = 1.0
    flip: float = 0.0
    photometric: float = 0.0
    #: sampling weight of night frames relative to day and dusk ones (the generator draws
    #: 60 % day, 20 % dusk, 20 % night drives; 2 makes night a third of the samples)
    night_weight: float = 1.0

    def validate(self) -> None:
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(
                f"scale_min and scale_max must satisfy 0 < scale_min <= scale_max, "
                f"got {self.scale_min}, {self.scale_max}"
            )
        if not 0 <= self.flip <= 1 or self.photometric < 0 or self.night_weight <= 0:
            raise ValueError("flip must be in [0, 1], photometric >= 0 and night_weight > 0")


#: No augmentation: every sample is the letterboxed image the node would see (a frozen
#: instance, so that it can be a default argument)
NO_AUGMENT = Augment()


def layout(
    src_wh: tuple[int, int], dst_wh: tuple[int, int], scale: float, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """Size ``(nw, nh)`` and offset ``(ox, oy)`` of ``src`` letterboxed into ``dst`` times
    ``scale``: a random crop where it is larger than the output, a random place inside it
    where smaller, centred as the preprocess node does at scale 1."""
    (sw, sh), (dw, dh) = src_wh, dst_wh
    s = min(dw / sw, dh / sh) * scale
    nw, nh = max(1, round(sw * s)), max(1, round(sh * s))
    ox = int(rng.integers(min(0, dw - nw), max(0, dw - nw) + 1)) if nw != dw and scale != 1 else (dw - nw) // 2
    oy = int(rng.integers(min(0, dh - nh), max(0, dh - nh) + 1)) if nh != dh and scale != 1 else (dh - nh) // 2
    return nw, nh, ox, oy


def place(
    src: np.ndarray, where: tuple[int, int, int, int], dst_wh: tuple[int, int], flip: bool, fill: int, interp: int
) -> np.ndarray:
    """``src`` resized and placed as ``where`` (from :func:`layout`) says, flipped first,
    the rest ``fill``."""
    nw, nh, ox, oy = where
    dw, dh = dst_wh
    resized = cv2.resize(src, (nw, nh), interpolation=interp) if (nw, nh) != (src.shape[1], src.shape[0]) else src
    if flip:
        resized = resized[:, ::-1]
    out = np.full((dh, dw, *src.shape[2:]), fill, src.dtype)
    x0, y0 = max(0, ox), max(0, oy)
    x1, y1 = min(dw, ox + nw), min(dh, oy + nh)
    out[y0:y1, x0:x1] = resized[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    return out


def photometric(img: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, gamma and contrast jitter of a uint8 image (one lookup table)."""
    gain = math.exp(rng.uniform(math.log(0.6), math.log(1.5)) * strength)
    contrast = math.exp(rng.uniform(math.log(0.7), math.log(1.3)) * strength)
    gamma = math.exp(rng.uniform(math.log(0.7), math.log(1.4)) * strength)
    x = np.arange(256, dtype=np.float32) / 255.0
    y = np.clip(x * gain, 0, 1) ** gamma
    y = np.clip((y - 0.5) * contrast + 0.5, 0, 1)
    return cv2.LUT(img, (y * 255).round().astype(np.uint8))


def augment_image(
    image: np.ndarray,
    layers: Sequence[np.ndarray],
    size: tuple[int, int],
    aug: Augment,
    rng: np.random.Generator,
    pad_value: int = 114,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``image`` (``(H, W, 3)`` uint8) and its label ``layers`` (``(H, W)`` integer maps:
    instance ids or 0/1 masks) at the model input ``size = (width, height)`` under one draw
    of ``aug`` from ``rng``; layers are resized with nearest-neighbour and padded with 0."""
    scale = math.exp(rng.uniform(math.log(aug.scale_min), math.log(aug.scale_max)))
    flip = bool(rng.random() < aug.flip)
    where = layout((image.shape[1], image.shape[0]), size, scale, rng)
    interp = resize_interpolation(image.shape[1], where[0])
    out = place(image, where, size, flip, pad_value, interp)
    warped = [place(layer, where, size, flip, 0, cv2.INTER_NEAREST) for layer in layers]
    if aug.photometric > 0:
        out = photometric(out, aug.photometric, rng)
    return out, warped

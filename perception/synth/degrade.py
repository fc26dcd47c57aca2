"""Image degradations drawn at random once per drive: time of day (day, dusk, night with
glowing lights), exposure and colour shifts, lens vignetting, motion blur, sensor noise and
JPEG artefacts. They change pixels only; masks and boxes stay exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from perception.synth.painter import Light


@dataclass(frozen=True)
class Look:
    """How a drive's camera sees the world."""

    time_of_day: str  # day, dusk, night
    gain: tuple[float, float, float]  # per-channel (B, G, R) white balance x exposure
    gamma: float
    contrast: float
    vignette: float  # 0 = none, 0.5 = corners at half brightness
    blur_px: int  # motion blur length (0 = none)
    blur_angle_deg: float
    noise_sigma: float  # sensor noise, in 8-bit levels
    jpeg_quality: int  # 0 = no extra JPEG round trip
    flicker: float  # per-frame exposure jitter (relative)


def random_look(rng: np.random.Generator, enabled: bool = True) -> Look:
    """A random look; ``enabled=False`` gives a clean daylight camera."""
    if not enabled:
        return Look("day", (1.0, 1.0, 1.0), 1.0, 1.0, 0.0, 0, 0.0, 0.0, 0, 0.0)
    tod = str(rng.choice(["day", "dusk", "night"], p=[0.6, 0.2, 0.2]))
    exposure = {"day": rng.uniform(0.75, 1.25), "dusk": rng.uniform(0.55, 0.85), "night": rng.uniform(0.22, 0.38)}[tod]
    wb = rng.normal(1.0, 0.07, 3)
    if tod == "dusk":
        wb *= (0.85, 0.97, 1.15)
    elif tod == "night":
        wb *= (1.15, 1.0, 0.85)
    return Look(
        time_of_day=tod,
        gain=tuple(float(g) for g in np.clip(wb * exposure, 0.1, 2.0)),  # type: ignore[arg-type]
        gamma=float(rng.uniform(0.8, 1.25)),
        contrast=float(rng.uniform(0.75, 1.2)),
        vignette=float(rng.uniform(0.0, 0.45)) if rng.random() < 0.7 else 0.0,
        blur_px=int(rng.integers(3, 10)) if rng.random() < 0.3 else 0,
        blur_angle_deg=float(rng.normal(0, 12)),
        noise_sigma=float(rng.uniform(1.0, 4.0) * (2.5 if tod == "night" else 1.0)) if rng.random() < 0.8 else 0.0,
        jpeg_quality=int(rng.integers(18, 60)) if rng.random() < 0.35 else 0,
        flicker=float(rng.uniform(0.0, 0.04)),
    )


class CameraEffects:
    """Applies a :class:`Look` to frames of one size (precomputes vignette, kernels, noise)."""

    def __init__(self, look: Look, width: int, height: int, rng: np.random.Generator) -> None:
        self.look = look
        self.rng = rng
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        r2 = ((xx - width / 2) / (width / 2)) ** 2 + ((yy - height / 2) / (height / 2)) ** 2
        v = 1.0 - look.vignette * np.clip(r2 / 2.0, 0, 1) ** 1.2
        self.vignette = np.repeat((v * 255).astype(np.uint8)[..., None], 3, axis=2) if look.vignette > 0 else None
        self.kernel = None
        if look.blur_px > 1:
            k = np.zeros((look.blur_px, look.blur_px), np.float32)
            k[look.blur_px // 2, :] = 1.0
            rot = cv2.getRotationMatrix2D((look.blur_px / 2 - 0.5, look.blur_px / 2 - 0.5), look.blur_angle_deg, 1.0)
            k = cv2.warpAffine(k, rot, k.shape)
            self.kernel = k / max(k.sum(), 1e-6)
        self.noise = None
        if look.noise_sigma > 0:  # a bank of noise larger than the frame; windows of it per frame
            self.noise = np.clip(rng.normal(0, look.noise_sigma, (height + 32, width + 32, 3)), -127, 127).astype(
                np.int16
            )

    def _lut(self, flicker: float) -> np.ndarray:
        x = np.arange(256, dtype=np.float64) / 255.0
        lut = np.empty((256, 1, 3), np.uint8)
        for c in range(3):
            y = np.clip(x * self.look.gain[c] * flicker, 0, 1) ** self.look.gamma
            y = np.clip((y - 0.5) * self.look.contrast + 0.5, 0, 1)
            lut[:, 0, c] = np.round(y * 255).astype(np.uint8)
        return lut

    def apply(self, img: np.ndarray, lights: list[Light]) -> np.ndarray:
        """Degrade an ``(H, W, 3)`` uint8 BGR frame; returns a new array."""
        look, rng = self.look, self.rng
        out = cv2.LUT(img, self._lut(1.0 + rng.normal(0, look.flicker) if look.flicker else 1.0))
        if look.time_of_day != "day" and lights:
            glow = np.zeros_like(out)
            for li in lights:
                r = max(1, int(round(li.radius_px * (2.5 if look.time_of_day == "night" else 1.2))))
                cv2.circle(glow, (int(li.u), int(li.v)), r, li.color, -1, cv2.LINE_AA)
            k = max(3, (int(out.shape[0] / 60) | 1))
            glow = cv2.GaussianBlur(glow, (k, k), 0)
            amount = 1.0 if look.time_of_day == "night" else 0.45
            out = cv2.addWeighted(out, 1.0, glow, amount, 0.0)
        if self.vignette is not None:
            out = cv2.multiply(out, self.vignette, scale=1.0 / 255)
        if self.kernel is not None:
            out = cv2.filter2D(out, -1, self.kernel)
        if self.noise is not None:
            h, w = out.shape[:2]
            oy, ox = int(rng.integers(0, 32)), int(rng.integers(0, 32))
            out = np.clip(out.astype(np.int16) + self.noise[oy : oy + h, ox : ox + w], 0, 255).astype(np.uint8)
        if look.jpeg_quality > 0:
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, look.jpeg_quality])
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        return out


def sun_offset(rng: np.random.Generator) -> tuple[float, float]:
    """Ground offset (x, z) per metre of height of the drive's shadows (the sun's direction)."""
    az = rng.uniform(-math.pi, math.pi)
    length = rng.uniform(0.3, 1.2)
    return length * math.sin(az), length * math.cos(az)

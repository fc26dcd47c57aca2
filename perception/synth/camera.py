"""Pinhole camera on the ego car: world-to-image projection with pitch and roll shake.

World frame: ``X`` right, ``Y`` up, ``Z`` forward along the road, metres; the ground is
``Y = 0``. The camera sits at ``(x_m, height_m, z_m)`` looking along ``+Z``, pitched down by
``pitch_rad`` and rolled by ``roll_rad``. Image ``u`` grows right, ``v`` down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

NEAR_M = 0.6


@dataclass(frozen=True)
class Camera:
    """One frame's camera pose and intrinsics."""

    width: int
    height: int
    focal_px: float
    x_m: float
    height_m: float
    z_m: float
    pitch_rad: float
    roll_rad: float

    @classmethod
    def make(
        cls,
        width: int,
        height: int,
        hfov_deg: float,
        x_m: float,
        height_m: float,
        z_m: float,
        pitch_rad: float,
        roll_rad: float,
    ) -> Camera:
        focal = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
        return cls(width, height, focal, x_m, height_m, z_m, pitch_rad, roll_rad)

    @cached_property
    def matrix(self) -> np.ndarray:
        """``(3, 4)`` projection ``K [R | -R C]`` from world points to homogeneous pixels."""
        cp, sp = math.cos(self.pitch_rad), math.sin(self.pitch_rad)
        cr, sr = math.cos(self.roll_rad), math.sin(self.roll_rad)
        flip = np.diag([1.0, -1.0, 1.0])  # world Y up -> camera y down
        pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        r = roll @ pitch @ flip
        k = np.array([[self.focal_px, 0, self.width / 2], [0, self.focal_px, self.height / 2], [0, 0, 1]])
        c = np.array([self.x_m, self.height_m, self.z_m])
        return k @ np.concatenate([r, (-r @ c)[:, None]], axis=1)

    def project(self, pts_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 3)`` world points -> ``(N, 2)`` float pixels and ``(N,)`` depth in metres.

        Depth is clamped to :data:`NEAR_M` for the division so points behind the camera
        never flip sides; callers drop shapes whose depth is below it."""
        return _apply(self.matrix, pts_m)

    def for_pose(self, x_m: float, z_m: float, heading_rad: float) -> Projector:
        """A projector for points in the local frame of an object standing at ``(x_m, z_m)``
        with ``heading_rad`` (0 = +Z, pi/2 = +X); local axes: across, up, along heading."""
        c, s = math.cos(heading_rad), math.sin(heading_rad)
        pose = np.array([[c, 0, s, x_m], [0, 1, 0, 0], [-s, 0, c, z_m], [0, 0, 0, 1.0]])
        dx, dz = self.x_m - x_m, self.z_m - z_m
        cam_local = np.array([dx * c - dz * s, self.height_m, dx * s + dz * c])
        return Projector(self.matrix @ pose, cam_local, self.focal_px)

    def horizon_v(self) -> float:
        """Image row of the horizon at the image centre column."""
        return self.height / 2 - self.focal_px * math.tan(self.pitch_rad)

    def px_per_m(self, depth_m: float) -> float:
        """Pixels per metre of an upright object at ``depth_m``."""
        return self.focal_px / max(depth_m, NEAR_M)


def _apply(m: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = pts @ m[:, :3].T + m[:, 3]
    depth = h[:, 2]
    return h[:, :2] / np.maximum(depth, NEAR_M)[:, None], depth


@dataclass(frozen=True)
class Projector:
    """Projects ``(N, 3)`` points of one object's local frame; ``cam_local`` is the camera
    position in that frame."""

    m: np.ndarray
    cam_local: np.ndarray
    focal_px: float

    def uv(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _apply(self.m, pts)

    def ppm(self, depth_m: float) -> float:
        return self.focal_px / max(depth_m, NEAR_M)


@dataclass
class EgoMotion:
    """Forward motion of the ego car with a small pitch/roll shake (road roughness).

    ``step(dt_s, rng)`` advances it; ``camera(...)`` gives the frame's camera."""

    speed_mps: float
    z_m: float = 0.0
    height_m: float = 1.45
    base_pitch_rad: float = 0.035
    shake: float = 1.0
    t_s: float = 0.0
    phase: tuple[float, float, float] = (0.0, 0.0, 0.0)
    jitter_pitch: float = 0.0
    jitter_roll: float = 0.0

    def step(self, dt_s: float, rng: np.random.Generator) -> None:
        self.t_s += dt_s
        self.z_m += self.speed_mps * dt_s
        # Low-pass filtered random jolts on top of slow sinusoidal sway.
        a = min(1.0, dt_s * 8.0)
        self.jitter_pitch += a * (rng.normal(0, 0.004) - self.jitter_pitch)
        self.jitter_roll += a * (rng.normal(0, 0.004) - self.jitter_roll)

    def camera(self, width: int, height: int, hfov_deg: float) -> Camera:
        t, (p0, p1, p2) = self.t_s, self.phase
        pitch = self.base_pitch_rad + self.shake * (0.006 * math.sin(2.1 * t + p0) + self.jitter_pitch)
        roll = self.shake * (0.008 * math.sin(1.3 * t + p1) + self.jitter_roll)
        bob = self.shake * 0.02 * math.sin(3.3 * t + p2)
        return Camera.make(width, height, hfov_deg, 0.0, self.height_m + bob, self.z_m, pitch, roll)

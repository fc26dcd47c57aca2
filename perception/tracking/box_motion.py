"""Constant-velocity Kalman filter on boxes, stepped by real elapsed time.

The state of one track is a ``(5, 4)`` float64 array: rows ``pos, vel, p_pp, p_pv, p_vv``
for the four box coordinates ``cx, cy, w, h`` (pixels, pixels per second, and the 2x2
covariance of each coordinate). Process and measurement noise are diagonal, as in SORT
and ByteTrack, so the 8-dimensional filter splits exactly into four independent 2-state
filters and every step is a handful of elementwise operations on a stack of tracks:
``(n, 5, 4)`` arrays, no per-track loop and no 8x8 matrix products. The process noise is
the continuous white-noise acceleration model, so a step of ``dt`` seconds adds
``q * [[dt^3/3, dt^2/2], [dt^2/2, dt]]``: a dropped frame or a slow frame simply means a
longer step, with the uncertainty growing accordingly. (A general Kalman library such as
filterpy would loop over tracks in Python; this is why the few lines are written here.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POS, VEL, P_PP, P_PV, P_VV = range(5)


@dataclass(frozen=True)
class MotionNoise:
    """Noise levels, relative to the box size ``s = sqrt(w * h)`` (pixels).

    ``accel_centre``/``accel_size``: std of the acceleration of the centre and of the size,
    in box sizes per s^2; ``measurement``: std of a measured coordinate, in box sizes;
    ``initial_speed``: std of the unknown speed of a new track, in box sizes per second;
    ``measurement_floor_px``: std in pixels added (in quadrature) to every measured
    coordinate: a box taken from a mask is off by a pixel or two whatever the object's size,
    so on small objects the relative ``measurement`` alone trusts the box far too much and
    its pixel noise turns into velocity. ``max_shrink_per_s``: the width and height shrink
    by at most this share of themselves per second in a prediction (0: no limit); a box
    clipped by the image border shrinks fast, and extrapolated it would reach zero width.
    """

    accel_centre: float = 4.0
    accel_size: float = 1.0
    measurement: float = 0.05
    initial_speed: float = 3.0
    min_size_px: float = 4.0
    measurement_floor_px: float = 0.0
    max_shrink_per_s: float = 0.0


def xyxy_to_cxcywh(boxes_xyxy: np.ndarray) -> np.ndarray:
    """``(n, 4)`` xyxy -> ``(n, 4)`` float64 ``cx, cy, w, h``."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    out = np.empty_like(b)
    out[:, :2] = (b[:, :2] + b[:, 2:]) / 2
    out[:, 2:] = b[:, 2:] - b[:, :2]
    return out


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``(n, 4)`` ``cx, cy, w, h`` -> ``(n, 4)`` float64 xyxy (sizes clipped at 0)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    half = np.maximum(b[:, 2:], 0.0) / 2
    return np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)


def _size(cxcywh: np.ndarray, noise: MotionNoise) -> np.ndarray:
    return np.maximum(np.sqrt(np.maximum(cxcywh[:, 2] * cxcywh[:, 3], 0.0)), noise.min_size_px)


def initiate(boxes_xyxy: np.ndarray, noise: MotionNoise) -> np.ndarray:
    """New states at rest for ``(n, 4)`` xyxy boxes -> ``(n, 5, 4)`` float64."""
    z = xyxy_to_cxcywh(boxes_xyxy)
    s = _size(z, noise)[:, None]
    state = np.zeros((len(z), 5, 4))
    state[:, POS] = z
    state[:, P_PP] = (noise.measurement * s) ** 2 + noise.measurement_floor_px**2
    state[:, P_VV] = (noise.initial_speed * s) ** 2
    return state


def predict(state: np.ndarray, dt_s: np.ndarray | float, noise: MotionNoise) -> np.ndarray:
    """Step ``(n, 5, 4)`` states forward by ``dt_s`` seconds (scalar or ``(n,)``)."""
    out = state.copy()
    dt = np.broadcast_to(np.asarray(dt_s, dtype=np.float64), (len(state),))[:, None]
    s = _size(state[:, POS], noise)[:, None]
    accel = np.array([noise.accel_centre, noise.accel_centre, noise.accel_size, noise.accel_size])
    q = (accel[None, :] * s) ** 2
    pp, pv, vv = state[:, P_PP], state[:, P_PV], state[:, P_VV]
    if noise.max_shrink_per_s > 0:
        floor = -noise.max_shrink_per_s * np.maximum(state[:, POS, 2:], 0.0)
        out[:, VEL, 2:] = np.maximum(state[:, VEL, 2:], floor)
    out[:, POS] = state[:, POS] + out[:, VEL] * dt
    out[:, P_PP] = pp + 2 * dt * pv + dt * dt * vv + q * dt**3 / 3
    out[:, P_PV] = pv + dt * vv + q * dt**2 / 2
    out[:, P_VV] = vv + q * dt
    return out


def update(state: np.ndarray, boxes_xyxy: np.ndarray, noise: MotionNoise) -> np.ndarray:
    """Correct ``(n, 5, 4)`` predicted states with measured ``(n, 4)`` xyxy boxes."""
    out = state.copy()
    z = xyxy_to_cxcywh(boxes_xyxy)
    r = ((noise.measurement * _size(z, noise))[:, None]) ** 2 + noise.measurement_floor_px**2
    pp, pv, vv = state[:, P_PP], state[:, P_PV], state[:, P_VV]
    innovation_var = pp + r
    k_pos, k_vel = pp / innovation_var, pv / innovation_var
    residual = z - state[:, POS]
    out[:, POS] = state[:, POS] + k_pos * residual
    out[:, VEL] = state[:, VEL] + k_vel * residual
    out[:, P_PP] = (1 - k_pos) * pp
    out[:, P_PV] = (1 - k_pos) * pv
    out[:, P_VV] = vv - k_vel * pv
    return out


def boxes_xyxy(state: np.ndarray) -> np.ndarray:
    """Box estimates of ``(n, 5, 4)`` states -> ``(n, 4)`` float64 xyxy."""
    return cxcywh_to_xyxy(state[:, POS])

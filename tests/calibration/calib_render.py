"""Render planar scenes (checkerboards, upright panels on the ground) through a known camera
with real lens distortion, for the calibration tests.

Rendering is exact ray casting: the ray of every (sub)pixel of the *distorted* image is
found once per camera with OpenCV's iterative undistortion (checked to round-trip), then
each pose intersects those rays with its plane. 3x3 supersampling anti-aliases edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from perception.calibration.board import Board
from perception.calibration.camera_file import CameraInfo
from perception.calibration.undistort import camera_info_from_opencv, undistort_points

SUPERSAMPLE = 3


@dataclass(frozen=True)
class TrueCamera:
    """The ground-truth camera: K (3, 3), D, size (w, h), fisheye or not."""

    k: np.ndarray
    d: np.ndarray
    size: tuple[int, int]
    fisheye: bool

    def info(self, name: str = "truth") -> CameraInfo:
        return camera_info_from_opencv(self.k, self.d, self.size, self.fisheye, name)

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """(N, 3) points in the optical frame -> (N, 2) raw (distorted) pixels."""
        zero = np.zeros(3)
        pts = np.asarray(points_cam, np.float64).reshape(-1, 1, 3)
        if self.fisheye:
            return cv2.fisheye.projectPoints(pts, zero, zero, self.k, self.d)[0].reshape(-1, 2)
        return cv2.projectPoints(pts, zero, zero, self.k, self.d)[0].reshape(-1, 2)


PINHOLE = TrueCamera(
    np.array([[520.0, 0, 322.5], [0, 515.0, 238.0], [0, 0, 1]]),
    np.array([-0.28, 0.09, 0.0008, -0.0006, -0.01]),
    (640, 480),
    False,
)
FISHEYE = TrueCamera(
    np.array([[300.0, 0, 318.0], [0, 302.0, 243.0], [0, 0, 1]]),
    np.array([0.06, -0.02, 0.004, -0.001]),
    (640, 480),
    True,
)


def pixel_rays(cam: TrueCamera, step_px: int = 4) -> np.ndarray:
    """(H*S, W*S, 2) float64 normalised ray (x/z, y/z) of each subpixel of the raw image.

    Exact (iterative) undistortion on a grid every ``step_px`` pixels, bicubic in between;
    asserted to reproject onto the subpixels within 0.01 px.
    """
    w, h = cam.size
    s = SUPERSAMPLE
    pad = 4 * step_px
    gu = np.arange(-pad, w + pad + step_px, step_px, dtype=np.float64)
    gv = np.arange(-pad, h + pad + step_px, step_px, dtype=np.float64)
    coarse_px = np.stack(np.meshgrid(gu, gv), axis=-1).reshape(-1, 1, 2)
    if cam.fisheye:
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
        coarse = cv2.fisheye.undistortPoints(coarse_px, cam.k, cam.d, criteria=crit)
    else:
        coarse = undistort_points(coarse_px, cam.k, cam.d, iterations=100)
    coarse = coarse.reshape(len(gv), len(gu), 2)
    offs = (np.arange(s) + 0.5) / s - 0.5
    us = (np.arange(w)[:, None] + offs[None, :]).ravel()
    vs = (np.arange(h)[:, None] + offs[None, :]).ravel()
    mu, mv = np.meshgrid((us + pad) / step_px, (vs + pad) / step_px)
    rays = np.stack(
        [ndimage.map_coordinates(coarse[..., c], [mv, mu], order=3, mode="nearest") for c in range(2)], axis=-1
    )
    probe = rays[:: 7 * s, :: 7 * s].reshape(-1, 2)
    back = cam.project(np.c_[probe, np.ones(len(probe))])
    want = np.stack(np.meshgrid(us[:: 7 * s], vs[:: 7 * s]), axis=-1).reshape(-1, 2)
    err = np.abs(back - want).max()
    assert err < 0.01, f"ray inversion off by {err} px"
    return rays


def _shade(coverage: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    h, w = coverage.shape[0] // SUPERSAMPLE, coverage.shape[1] // SUPERSAMPLE
    grey = coverage.reshape(h, SUPERSAMPLE, w, SUPERSAMPLE).mean(axis=(1, 3))
    img = grey + rng.normal(0.0, noise, grey.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def render_board(
    rays: np.ndarray, board: Board, rvec: np.ndarray, tvec: np.ndarray, rng: np.random.Generator, noise: float = 1.5
) -> np.ndarray:
    """(H, W) uint8 image of ``board`` (one white square of margin around the squares) at
    pose (rvec, tvec) (board -> optical frame), grey background."""
    rot, _ = cv2.Rodrigues(np.asarray(rvec, np.float64))
    hom = np.c_[rot[:, :2], np.asarray(tvec, np.float64).ravel()]  # board (X, Y, 1) -> ray
    m = np.linalg.inv(hom)  # ray -> board (X, Y, 1), up to scale
    rx, ry = rays[..., 0], rays[..., 1]
    w = rx * m[2, 0] + ry * m[2, 1] + m[2, 2]
    valid = w > 0
    w = w * board.square_m
    qx = (rx * m[0, 0] + ry * m[0, 1] + m[0, 2]) / w + 1.0  # in squares, 0 at the board's corner
    qy = (rx * m[1, 0] + ry * m[1, 1] + m[1, 2]) / w + 1.0
    inside = valid & (qx >= 0) & (qx < board.cols + 1) & (qy >= 0) & (qy < board.rows + 1)
    margin = valid & (qx >= -1) & (qx < board.cols + 2) & (qy >= -1) & (qy < board.rows + 2)
    black = inside & ((np.floor(qx) + np.floor(qy)) % 2 == 0)
    coverage = np.where(margin, 235.0, 110.0)
    coverage[black] = 25.0
    return _shade(coverage, rng, noise)


def board_corners_px(cam: TrueCamera, board: Board, rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """(N, 2) raw pixels of the board's inner corners at a pose."""
    rot, _ = cv2.Rodrigues(np.asarray(rvec, np.float64))
    pts = board.object_points().astype(np.float64) @ rot.T + np.asarray(tvec, np.float64).ravel()
    return cam.project(pts)


def random_poses(
    cam: TrueCamera, board: Board, n: int, seed: int, depth_m: tuple[float, float] | None = None, tilt_rad: float = 0.6
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` poses with the whole board (plus margin) inside the image, spread over it and
    tilted up to ``tilt_rad`` about x and y (tilt is what makes the focal length observable).
    ``depth_m`` defaults to a range where the board spans about a third of the image."""
    if depth_m is None:
        near = cam.k[0, 0] * (board.cols + 1) * board.square_m / (0.5 * cam.size[0])
        depth_m = (near, 1.8 * near)
    rng = np.random.default_rng(seed)
    w, h = cam.size
    centre = np.array([(board.cols - 1) * board.square_m / 2, (board.rows - 1) * board.square_m / 2, 0.0])
    poses = []
    while len(poses) < n:
        rx, ry = rng.uniform(-tilt_rad, tilt_rad, 2)
        rz = rng.uniform(-0.3, 0.3)
        rot, _ = cv2.Rodrigues(np.array([rx, ry, rz]))
        z = rng.uniform(*depth_m)
        target = np.array([rng.uniform(-0.45, 0.45) * w / cam.k[0, 0], rng.uniform(-0.4, 0.4) * h / cam.k[1, 1], 1.0])
        tvec = target * z - rot @ centre
        outline = np.array([[x, y, 0.0] for x in (-2, board.cols + 1) for y in (-2, board.rows + 1)]) * board.square_m
        cam_pts = outline @ rot.T + tvec
        if (cam_pts[:, 2] < 0.1).any():
            continue
        px = cam.project(cam_pts)
        if (px[:, 0] > 4).all() and (px[:, 0] < w - 5).all() and (px[:, 1] > 4).all() and (px[:, 1] < h - 5).all():
            poses.append((cv2.Rodrigues(rot)[0].ravel(), tvec))
    return poses


def render_panel(
    rays: np.ndarray,
    rot_robot_optical: np.ndarray,
    cam_pos_m: np.ndarray,
    centre_xy_m: tuple[float, float],
    width_m: float,
    height_m: float,
) -> np.ndarray:
    """(H, W) bool mask of an upright panel standing on the ground at ``centre_xy_m`` facing
    the robot (a plane x = const in the robot frame), seen by the raw camera. Pixel-centre
    sampling: a pixel is set when its centre ray hits the panel."""
    s = SUPERSAMPLE
    centre = rays[s // 2 :: s, s // 2 :: s]
    ray_cam = np.concatenate([centre, np.ones(centre.shape[:2] + (1,))], axis=-1)
    ray = ray_cam @ rot_robot_optical.T
    x0, yc = centre_xy_m
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (x0 - cam_pos_m[0]) / ray[..., 0]
    hit = cam_pos_m + ray * t[..., None]
    return (t > 0) & (np.abs(hit[..., 1] - yc) <= width_m / 2) & (hit[..., 2] >= 0) & (hit[..., 2] <= height_m)

"""Ground-plane positions: where on a flat ground, in metres in the robot frame, a pixel lies.

Frames (ROS REP-103 / REP-105):

- robot frame (``Extrinsics.frame_id``, e.g. ``base_link``): x forward, y left, z up, the
  ground is the plane z = 0;
- camera body frame: x forward (the optical axis), y left, z up; its pose in the robot
  frame is the :class:`~perception.calibration.camera_file.Extrinsics` (position, roll/pitch/yaw);
- camera optical frame: z forward, x right, y down (image columns grow with x, rows with y).

Pixels are *undistorted* camera pixels (what the preprocess node with ``calib:`` produces):
the camera matrix is ``CameraInfo.new_K`` and the ray is ``R^T @ inv(new_K) @ [u, v, 1]``.
OpenCV's convention holds: pixel ``(col, row)`` has its centre at ``u = col, v = row``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from pycocotools import mask as mask_utils
from scipy.spatial.transform import Rotation

from perception.bus.schema import Rle
from perception.calibration.camera_file import CameraInfo, Extrinsics

#: camera optical frame -> camera body frame (columns: optical x, y, z in body axes)
OPTICAL_TO_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

#: share of a mask's height, from its lowest row up, whose columns give its centre
BOTTOM_BAND = 0.05

#: rays whose downward component is smaller than this never meet the ground ahead
_MIN_DOWN = 1e-9


class GroundPosition(NamedTuple):
    """``(x_m, y_m)`` in the robot frame; both NaN and ``above_horizon`` true when the
    pixel's ray does not hit the ground in front of the camera."""

    x_m: float
    y_m: float
    above_horizon: bool


def camera_to_robot(ext: Extrinsics) -> tuple[np.ndarray, np.ndarray]:
    """``(R, t)``: (3, 3) rotation from the camera *optical* frame to the robot frame and the
    (3,) camera position in the robot frame, float64."""
    body = Rotation.from_euler("xyz", [ext.roll_rad, ext.pitch_rad, ext.yaw_rad]).as_matrix()
    return body @ OPTICAL_TO_BODY, np.array([ext.x_m, ext.y_m, ext.height_m])


def pixel_to_ground(u_px: float, v_px: float, camera: CameraInfo, ext: Extrinsics) -> GroundPosition:
    """Intersect the ray of undistorted pixel ``(u_px, v_px)`` with the ground z = 0."""
    ray_cam = camera.R.T @ np.linalg.solve(camera.new_K, np.array([u_px, v_px, 1.0]))
    rot, origin = camera_to_robot(ext)
    ray = rot @ ray_cam
    if ray[2] > -_MIN_DOWN:
        return GroundPosition(float("nan"), float("nan"), True)
    hit = origin + ray * (-origin[2] / ray[2])
    return GroundPosition(float(hit[0]), float(hit[1]), False)


def ground_to_pixel(x_m: float, y_m: float, camera: CameraInfo, ext: Extrinsics) -> tuple[float, float] | None:
    """Undistorted pixel ``(u, v)`` of ground point ``(x_m, y_m, 0)``, or ``None`` when it
    is behind the camera."""
    rot, origin = camera_to_robot(ext)
    p_cam = camera.R @ (rot.T @ (np.array([x_m, y_m, 0.0]) - origin))
    if p_cam[2] <= 0:
        return None
    uvw = camera.new_K @ p_cam
    return float(uvw[0] / uvw[2]), float(uvw[1] / uvw[2])


def bottom_centre_px(target: np.ndarray | Rle | Sequence[float]) -> tuple[float, float, int, int] | None:
    """Bottom-centre ``(u, v)`` of a mask or box, with the image size ``(w, h)`` it implies
    (0, 0 for a box). ``None`` for an empty mask.

    - mask, (H, W) bool/uint8 array or :class:`Rle`: ``v`` is the bottom edge of the lowest
      row holding the mask (``row + 0.5``), where the object meets the ground; ``u`` is the
      mean column of the mask pixels in its bottom band, the lowest
      :data:`BOTTOM_BAND` of its rows (at least that one row): the lowest row alone
      is often a few jagged pixels off to one side of the object's foot;
    - box, ``(x0, y0, x1, y1)`` float pixels: ``((x0 + x1) / 2, y1)``.
    """
    if isinstance(target, Rle):
        target = mask_utils.decode(target.to_coco())
    arr = np.asarray(target)
    if arr.ndim == 1:
        if arr.shape != (4,):
            raise ValueError(f"a box must be (x0, y0, x1, y1), got shape {arr.shape}")
        return float(arr[0] + arr[2]) / 2, float(arr[3]), 0, 0
    if arr.ndim != 2:
        raise ValueError(f"a mask must be (H, W), got shape {arr.shape}")
    rows = np.flatnonzero(arr.any(axis=1))
    if rows.size == 0:
        return None
    top, bottom = int(rows[0]), int(rows[-1])
    band = max(1, round(BOTTOM_BAND * (bottom - top + 1)))
    _, cols = np.nonzero(arr[bottom - band + 1 : bottom + 1])
    return float(cols.mean()), bottom + 0.5, arr.shape[1], arr.shape[0]


def ground_position(
    target: np.ndarray | Rle | Sequence[float],
    camera: CameraInfo,
    ext: Extrinsics,
    image_wh: tuple[int, int] | None = None,
) -> GroundPosition:
    """Ground position of a track from its mask (or box) in undistorted camera pixels.

    ``target``: (H, W) bool mask, :class:`Rle`, or an xyxy box (see :func:`bottom_centre_px`).
    ``image_wh``: the (width, height) a box's pixels refer to, when not the calibration's
    (a mask's own size is used for masks). A size other than the calibration's rescales
    the camera (same aspect ratio only, else :class:`CalibrationError`). Returns
    ``GroundPosition(x_m, y_m, above_horizon)``: a point above the horizon gives
    ``(nan, nan, True)``, an empty mask ``(nan, nan, False)``.
    """
    found = bottom_centre_px(target)
    if found is None:
        return GroundPosition(float("nan"), float("nan"), False)
    u, v, w, h = found
    if not w and image_wh is not None:
        w, h = image_wh
    if w and (w, h) != (camera.image_width, camera.image_height):
        camera = camera.scaled_to(w, h)
    return pixel_to_ground(u, v, camera, ext)

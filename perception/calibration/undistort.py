"""Undistortion with precomputed maps, and the point mapping between raw and undistorted pixels.

The undistorted image has the raw image's size and the camera matrix ``new_K`` (the left
3x3 of the calibration's ``projection_matrix``, rotated by its ``rectification_matrix``):
a pinhole camera without distortion. Boxes and masks computed on it are in *undistorted
camera pixels*; :meth:`Undistorter.to_raw_px` maps points back to the raw image.

OpenCV does the work (``initUndistortRectifyMap`` / ``cv2.fisheye`` and ``remap``).
"""

from __future__ import annotations

import cv2
import numpy as np

from perception.calibration.camera_file import CameraInfo


class Undistorter:
    """Maps built once for one camera at one frame size; :meth:`apply` is one ``remap``.

    ``camera`` is rescaled to ``(width, height)`` when given and different from its
    calibrated size (same aspect ratio only, see :meth:`CameraInfo.scaled_to`).
    """

    def __init__(self, camera: CameraInfo, width: int | None = None, height: int | None = None) -> None:
        if width is not None and height is not None:
            camera = camera.scaled_to(width, height)
        self.camera = camera
        self.size = (camera.image_width, camera.image_height)
        k, d, r, p = camera.K, camera.D, camera.R, camera.P
        if camera.fisheye:
            self._map1, self._map2 = cv2.fisheye.initUndistortRectifyMap(k, d, r, p[:, :3], self.size, cv2.CV_16SC2)
        else:
            self._map1, self._map2 = cv2.initUndistortRectifyMap(k, d, r, p[:, :3], self.size, cv2.CV_16SC2)

    @property
    def new_K(self) -> np.ndarray:
        """(3, 3) float64 camera matrix of the undistorted image."""
        return self.camera.new_K

    def apply(self, image: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """Undistort ``image`` (H, W[, C]) of the camera's size; same shape and dtype back.
        Use ``cv2.INTER_NEAREST`` for label or bool-as-uint8 masks."""
        h, w = image.shape[:2]
        if (w, h) != self.size:
            raise ValueError(
                f"camera {self.camera.camera_name!r}: frame is {w}x{h}, maps are for {self.size[0]}x{self.size[1]}"
            )
        return cv2.remap(image, self._map1, self._map2, interpolation, borderMode=cv2.BORDER_CONSTANT)

    def to_undistorted_px(self, points_px: np.ndarray) -> np.ndarray:
        """(N, 2) float raw-image pixels -> (N, 2) float64 undistorted pixels."""
        pts = np.asarray(points_px, dtype=np.float64).reshape(-1, 1, 2)
        c = self.camera
        if c.fisheye:
            out = cv2.fisheye.undistortPoints(pts, c.K, c.D, R=c.R, P=c.new_K)
        else:
            out = undistort_points(pts, c.K, c.D, c.R, c.new_K)
        return out.reshape(-1, 2)

    def to_raw_px(self, points_px: np.ndarray) -> np.ndarray:
        """(N, 2) float undistorted pixels -> (N, 2) float64 raw-image pixels."""
        pts = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
        c = self.camera
        rays = np.linalg.solve(c.new_K, np.c_[pts, np.ones(len(pts))].T).T @ c.R  # R^T applied per row
        zero = np.zeros(3)
        if c.fisheye:
            out, _ = cv2.fisheye.projectPoints(rays.reshape(-1, 1, 3), zero, zero, c.K, c.D)
        else:
            out, _ = cv2.projectPoints(rays.reshape(-1, 1, 3), zero, zero, c.K, c.D)
        return out.reshape(-1, 2)


def undistort_points(
    points_px: np.ndarray,
    k: np.ndarray,
    d: np.ndarray,
    r: np.ndarray | None = None,
    p: np.ndarray | None = None,
    iterations: int = 50,
) -> np.ndarray:
    """Pinhole ``cv2.undistortPoints`` iterated to convergence (the default 5 iterations are
    not enough for strong distortion): (N, 1, 2) raw pixels -> (N, 1, 2) float64, normalised
    coordinates when ``p`` is None, else pixels of ``p``."""
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, 1e-12)
    pts = np.asarray(points_px, dtype=np.float64).reshape(-1, 1, 2)
    if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4.x
        return cv2.undistortPointsIter(pts, k, d, r, p, criteria)
    return cv2.undistortPoints(pts, k, d, R=r, P=p, criteria=criteria)  # OpenCV 5


def new_camera_matrix(k: np.ndarray, d: np.ndarray, size: tuple[int, int], fisheye: bool) -> np.ndarray:
    """(3, 3) float64 camera matrix of the undistorted image that keeps only valid pixels
    (``getOptimalNewCameraMatrix`` with alpha 0, or the fisheye estimate with balance 0, as
    ROS ``camera_calibration`` does)."""
    if fisheye:
        return cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(k, d, size, np.eye(3), balance=0.0)
    new_k, _ = cv2.getOptimalNewCameraMatrix(k, d, size, 0.0, size)
    return np.asarray(new_k, dtype=np.float64)


def _flat(a: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in np.ravel(a))


def camera_info_from_opencv(
    k: np.ndarray, d: np.ndarray, size: tuple[int, int], fisheye: bool, name: str = "camera"
) -> CameraInfo:
    """A :class:`CameraInfo` from OpenCV's ``K`` (3, 3), ``D`` and ``size`` (w, h), with
    identity rectification and ``P = [new_K | 0]`` from :func:`new_camera_matrix`."""
    k = np.asarray(k, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64).ravel()
    p = np.zeros((3, 4))
    p[:, :3] = new_camera_matrix(k, d, size, fisheye)
    return CameraInfo(
        size[0],
        size[1],
        name,
        _flat(k),
        "equidistant" if fisheye else "plumb_bob",
        _flat(d),
        _flat(np.eye(3)),
        _flat(p),
    )

"""Intrinsic calibration from checkerboard images (OpenCV), pinhole or fisheye.

The board is given by its *inner* corners, ``COLSxROWS`` (as ROS ``camera_calibration
--size``), and its square size in metres. Each image: ``findChessboardCorners`` then
``cornerSubPix``; images where the board is not found (or of another size) are rejected
and listed. Then ``cv2.calibrateCamera`` (``plumb_bob``, k1 k2 p1 p2 k3) or
``cv2.fisheye.calibrate`` (``equidistant``, k1..k4). The RMS reprojection error is
computed the same way for both models: ``sqrt(mean(|projected - detected|^2))`` over all
corners, in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from perception.calibration.camera_file import Calibration, CalibrationError, CalibrationQuality
from perception.calibration.undistort import camera_info_from_opencv

Model = Literal["pinhole", "fisheye"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MIN_IMAGES = 3


@dataclass(frozen=True)
class Board:
    """A checkerboard: ``cols`` x ``rows`` inner corners, squares of ``square_m`` metres."""

    cols: int
    rows: int
    square_m: float

    @classmethod
    def parse(cls, text: str, square_m: float) -> Board:
        """``"9x6"`` -> ``Board(9, 6, square_m)``."""
        parts = text.lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"board {text!r}: expected COLSxROWS inner corners, e.g. 9x6")
        cols, rows = (int(p) for p in parts)
        if cols < 2 or rows < 2 or not square_m > 0:
            raise ValueError(f"board {text!r} with square {square_m} m: need >= 2x2 corners and a square > 0 m")
        return cls(cols, rows, float(square_m))

    def object_points(self) -> np.ndarray:
        """(cols * rows, 3) float32 corner positions on the board plane (z = 0), metres,
        in the order ``findChessboardCorners`` reports them (columns fastest)."""
        grid = np.mgrid[0 : self.cols, 0 : self.rows].T.reshape(-1, 2)
        return np.c_[grid * self.square_m, np.zeros(len(grid))].astype(np.float32)


@dataclass(frozen=True)
class CalibrationRun:
    """The result: the calibration (with its quality block), per-image RMS, what was rejected."""

    calibration: Calibration
    rms_px: float
    per_image_rms_px: tuple[tuple[str, float], ...]
    rejected: tuple[tuple[str, str], ...]


def find_corners(gray: np.ndarray, board: Board) -> np.ndarray | None:
    """Refined inner corners ``(cols * rows, 1, 2)`` float32 of ``gray`` (H, W) uint8, or
    ``None`` when the whole board is not found."""
    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
    found, corners = cv2.findChessboardCorners(gray, (board.cols, board.rows), flags=flags)
    if not found:
        return None
    # The refinement window must stay inside one square: half the smallest corner spacing.
    grid = corners.reshape(board.rows, board.cols, 2)
    spacing = min(
        np.linalg.norm(np.diff(grid, axis=0), axis=2).min(), np.linalg.norm(np.diff(grid, axis=1), axis=2).min()
    )
    half = int(max(2, min(11, math.floor(spacing / 2) - 1)))
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-3)
    return cv2.cornerSubPix(gray, corners, (half, half), (-1, -1), criteria)


def _rms(errors: Iterable[np.ndarray]) -> float:
    sq = np.concatenate([np.sum(e.reshape(-1, 2) ** 2, axis=1) for e in errors])
    return float(np.sqrt(sq.mean()))


def calibrate(
    images: Sequence[tuple[str, np.ndarray]], board: Board, model: Model = "pinhole", camera_name: str = "camera"
) -> CalibrationRun:
    """Calibrate from ``(name, image)`` pairs, images (H, W) or (H, W, 3) uint8 BGR.

    Raises :class:`CalibrationError` when fewer than :data:`MIN_IMAGES` show the board.
    """
    size: tuple[int, int] | None = None
    names: list[str] = []
    img_pts: list[np.ndarray] = []
    rejected: list[tuple[str, str]] = []
    for name, image in images:
        if image.size == 0:
            rejected.append((name, "not a readable image"))
            continue
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        hw = (gray.shape[1], gray.shape[0])
        if size is not None and hw != size:
            rejected.append((name, f"size {hw[0]}x{hw[1]} differs from {size[0]}x{size[1]}"))
            continue
        corners = find_corners(gray, board)
        if corners is None:
            rejected.append((name, f"no {board.cols}x{board.rows} board found"))
            continue
        size = hw
        names.append(name)
        img_pts.append(corners)
    if size is None or len(img_pts) < MIN_IMAGES:
        raise CalibrationError(
            f"only {len(img_pts)} image(s) show a full {board.cols}x{board.rows} board; "
            f"need at least {MIN_IMAGES} (rejected: {len(rejected)})"
        )
    obj = board.object_points()
    if model == "fisheye":
        k, d, projected = _fisheye(obj, img_pts, size)
    elif model == "pinhole":
        k, d, projected = _pinhole(obj, img_pts, size)
    else:
        raise ValueError(f"model {model!r}: expected pinhole or fisheye")
    errors = [p.reshape(-1, 2) - c.reshape(-1, 2) for p, c in zip(projected, img_pts, strict=True)]
    rms = _rms(errors)
    camera = camera_info_from_opencv(k, d, size, model == "fisheye", camera_name)
    quality = CalibrationQuality(rms, len(img_pts), len(rejected), f"{board.cols}x{board.rows}", board.square_m)
    return CalibrationRun(
        Calibration(camera, None, quality),
        rms,
        tuple((n, _rms([e])) for n, e in zip(names, errors, strict=True)),
        tuple(rejected),
    )


def _pinhole(
    obj: np.ndarray, img_pts: list[np.ndarray], size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    objs = [obj] * len(img_pts)
    _, k, d, rvecs, tvecs = cv2.calibrateCamera(objs, img_pts, size, None, None)
    projected = [cv2.projectPoints(obj, r, t, k, d)[0] for r, t in zip(rvecs, tvecs, strict=True)]
    return k, d.ravel()[:5], projected


def _fisheye_flag(name: str) -> int:
    # OpenCV 4 keeps the fisheye flags in cv2.fisheye, OpenCV 5 in cv2.
    return int(getattr(cv2.fisheye, name, None) or getattr(cv2, name))


def _fisheye(
    obj: np.ndarray, img_pts: list[np.ndarray], size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    objs = [obj.reshape(1, -1, 3).astype(np.float64)] * len(img_pts)
    pts = [p.reshape(1, -1, 2).astype(np.float64) for p in img_pts]
    flags = _fisheye_flag("CALIB_RECOMPUTE_EXTRINSIC") | _fisheye_flag("CALIB_FIX_SKEW")
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-10)
    try:
        _, k, d, rvecs, tvecs = cv2.fisheye.calibrate(objs, pts, size, None, None, flags=flags, criteria=criteria)
    except cv2.error as e:
        raise CalibrationError(f"fisheye calibration did not converge: {e}") from None
    projected = [cv2.fisheye.projectPoints(o, r, t, k, d)[0] for o, r, t in zip(objs, rvecs, tvecs, strict=True)]
    return k, d.ravel()[:4], projected


def read_images(folder: str | Path) -> list[tuple[str, np.ndarray]]:
    """``(file name, BGR image)`` of every image in ``folder``, sorted by name; unreadable
    files are returned as empty arrays so they are rejected with the others."""
    root = Path(folder)
    if not root.is_dir():
        raise CalibrationError(f"image folder {str(root)!r} does not exist")
    out = []
    for path in sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        out.append((path.name, image if image is not None else np.zeros((0, 0), np.uint8)))
    if not out:
        raise CalibrationError(f"image folder {str(root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return out

"""Camera calibration files: ROS ``camera_info`` YAML plus the camera's pose on the robot.

Layout (the eight ``camera_info`` keys exactly as ROS ``camera_calibration_parsers``
writes them, then two optional blocks of ours)::

    image_width: 640
    image_height: 480
    camera_name: front
    camera_matrix: {rows: 3, cols: 3, data: [fx, 0, cx, 0, fy, cy, 0, 0, 1]}
    distortion_model: plumb_bob          # plumb_bob (5), rational_polynomial (8), equidistant (4)
    distortion_coefficients: {rows: 1, cols: 5, data: [k1, k2, p1, p2, k3]}
    rectification_matrix: {rows: 3, cols: 3, data: [1, 0, 0, 0, 1, 0, 0, 0, 1]}
    projection_matrix: {rows: 3, cols: 4, data: [fx', 0, cx', 0, 0, fy', cy', 0, 0, 0, 1, 0]}
    extrinsics:                          # optional: camera pose in the robot frame
      frame_id: base_link                # robot frame (REP-103: x forward, y left, z up,
      camera_frame_id: front_link        #   origin on the ground under the robot)
      x_m: 0.30                          # camera position in the robot frame
      y_m: 0.0
      height_m: 1.20                     # camera height above the (flat) ground
      roll_rad: 0.0                      # camera body orientation (x forward, y left,
      pitch_rad: 0.10                    #   z up), ROS fixed-axis roll/pitch/yaw;
      yaw_rad: 0.0                       #   pitch > 0 tilts the camera down
    calibration:                         # optional: how the intrinsics were measured
      rms_reprojection_px: 0.21
      images_used: 14
      images_rejected: 1
      board: 9x6
      square_m: 0.025

``projection_matrix`` (its left 3x3) is the camera matrix of the undistorted image; the
preprocess node undistorts to it, so boxes and masks downstream are in those pixels.
Every problem raises :class:`CalibrationError` naming the file and the field.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import yaml

#: distortion model -> number of coefficients (ROS names; OpenCV semantics)
DISTORTION_MODELS: dict[str, int] = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}

_CAMERA_KEYS = (
    "image_width",
    "image_height",
    "camera_name",
    "camera_matrix",
    "distortion_model",
    "distortion_coefficients",
    "rectification_matrix",
    "projection_matrix",
)
_TOP_KEYS = _CAMERA_KEYS + ("extrinsics", "calibration")


class CalibrationError(ValueError):
    """A calibration file that is missing, unreadable or wrong; names the file and field."""


@dataclass(frozen=True)
class CameraInfo:
    """Intrinsics as in ROS ``sensor_msgs/CameraInfo``; matrices row-major as tuples.

    ``camera_matrix`` (9), ``distortion_coefficients`` (see :data:`DISTORTION_MODELS`),
    ``rectification_matrix`` (9), ``projection_matrix`` (12). The properties return
    float64 arrays: ``K`` (3, 3), ``D`` (N,), ``R`` (3, 3), ``P`` (3, 4), ``new_K`` (3, 3).
    """

    image_width: int
    image_height: int
    camera_name: str
    camera_matrix: tuple[float, ...]
    distortion_model: str
    distortion_coefficients: tuple[float, ...]
    rectification_matrix: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    projection_matrix: tuple[float, ...] = ()

    @property
    def K(self) -> np.ndarray:
        return np.array(self.camera_matrix, dtype=np.float64).reshape(3, 3)

    @property
    def D(self) -> np.ndarray:
        return np.array(self.distortion_coefficients, dtype=np.float64)

    @property
    def R(self) -> np.ndarray:
        return np.array(self.rectification_matrix, dtype=np.float64).reshape(3, 3)

    @property
    def P(self) -> np.ndarray:
        return np.array(self.projection_matrix, dtype=np.float64).reshape(3, 4)

    @property
    def new_K(self) -> np.ndarray:
        """Camera matrix of the undistorted image: the left 3x3 of ``P``."""
        return self.P[:, :3].copy()

    @property
    def fisheye(self) -> bool:
        return self.distortion_model == "equidistant"

    def scaled_to(self, width: int, height: int) -> CameraInfo:
        """The same camera at another resolution (binning or resizing: same field of view).

        Focal lengths and principal points scale with the image; distortion coefficients,
        which act on normalised coordinates, do not. A different aspect ratio is a crop,
        not a scaling, and raises :class:`CalibrationError`.
        """
        if (width, height) == (self.image_width, self.image_height):
            return self
        sx, sy = width / self.image_width, height / self.image_height
        if abs(sx - sy) > 0.01 * max(sx, sy):
            raise CalibrationError(
                f"camera {self.camera_name!r}: calibrated for {self.image_width}x{self.image_height}, "
                f"frames are {width}x{height}: not the same aspect ratio (a crop cannot be rescaled)"
            )
        scale = np.diag([sx, sy, 1.0])
        return replace(
            self,
            image_width=width,
            image_height=height,
            camera_matrix=_flat(scale @ self.K),
            projection_matrix=_flat(scale @ self.P),
        )


@dataclass(frozen=True)
class Extrinsics:
    """Pose of the camera body (x forward, y left, z up) in the robot frame (REP-103).

    ``x_m``, ``y_m``: position; ``height_m``: height above the flat ground (z = 0);
    ``roll_rad``, ``pitch_rad``, ``yaw_rad``: ROS fixed-axis rotation
    ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``; all zero means looking straight ahead, level.
    """

    height_m: float
    x_m: float = 0.0
    y_m: float = 0.0
    roll_rad: float = 0.0
    pitch_rad: float = 0.0
    yaw_rad: float = 0.0
    frame_id: str = "base_link"
    camera_frame_id: str = "camera_link"


@dataclass(frozen=True)
class CalibrationQuality:
    """How the intrinsics were measured (written by ``perception calibrate``)."""

    rms_reprojection_px: float
    images_used: int
    images_rejected: int = 0
    board: str = ""
    square_m: float = 0.0


@dataclass(frozen=True)
class Calibration:
    """One calibration file: intrinsics, optional extrinsics and quality; ``path`` it came from."""

    camera: CameraInfo
    extrinsics: Extrinsics | None = None
    quality: CalibrationQuality | None = None
    path: str = ""


# --------------------------------------------------------------------------- reading


def _flat(a: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(a, dtype=np.float64).ravel())


class _Reader:
    """Field access with errors that name the file and the field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, field: str, what: str) -> CalibrationError:
        return CalibrationError(f"{self.where}: field {field!r}: {what}")

    def require(self, doc: dict[str, Any], key: str, prefix: str = "") -> Any:
        if key not in doc or doc[key] is None:
            raise self.fail(prefix + key, "missing")
        return doc[key]

    def number(self, doc: dict[str, Any], key: str, prefix: str = "", default: float | None = None) -> float:
        if default is not None and doc.get(key) is None:
            return default
        value = self.require(doc, key, prefix)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(prefix + key, f"expected a finite number, got {value!r}")
        return float(value)

    def integer(self, doc: dict[str, Any], key: str) -> int:
        value = self.require(doc, key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.fail(key, f"expected a positive integer, got {value!r}")
        return value

    def text(self, doc: dict[str, Any], key: str, prefix: str = "", default: str | None = None) -> str:
        if default is not None and doc.get(key) is None:
            return default
        value = self.require(doc, key, prefix)
        if not isinstance(value, str) or not value:
            raise self.fail(prefix + key, f"expected a non-empty string, got {value!r}")
        return value

    def matrix(self, doc: dict[str, Any], key: str, rows: int, cols: int) -> tuple[float, ...]:
        value = self.require(doc, key)
        if not isinstance(value, dict) or not {"rows", "cols", "data"} <= set(value):
            raise self.fail(key, f"expected a mapping with rows: {rows}, cols: {cols}, data: [{rows * cols} numbers]")
        if (value["rows"], value["cols"]) != (rows, cols):
            raise self.fail(key, f"expected a {rows}x{cols} matrix, got rows: {value['rows']}, cols: {value['cols']}")
        data = value["data"]
        if not isinstance(data, list) or len(data) != rows * cols:
            got = len(data) if isinstance(data, list) else type(data).__name__
            raise self.fail(key, f"expected {rows * cols} values in data, got {got}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in data):
            raise self.fail(key, "data must hold finite numbers only")
        return tuple(float(v) for v in data)


def camera_info_from_dict(doc: dict[str, Any], where: str = "<camera_info>") -> CameraInfo:
    """Validate a ``camera_info`` mapping (as read from YAML) into :class:`CameraInfo`."""
    r = _Reader(where)
    width, height = r.integer(doc, "image_width"), r.integer(doc, "image_height")
    name = r.text(doc, "camera_name")
    model = r.text(doc, "distortion_model")
    if model not in DISTORTION_MODELS:
        raise r.fail("distortion_model", f"expected one of {', '.join(DISTORTION_MODELS)}, got {model!r}")
    k = r.matrix(doc, "camera_matrix", 3, 3)
    if k[0] <= 0 or k[4] <= 0 or k[6:] != (0.0, 0.0, 1.0):
        raise r.fail("camera_matrix", "expected [fx, s, cx, 0, fy, cy, 0, 0, 1] with fx, fy > 0")
    d = r.matrix(doc, "distortion_coefficients", 1, DISTORTION_MODELS[model])
    rect = r.matrix(doc, "rectification_matrix", 3, 3)
    if not np.allclose(np.array(rect).reshape(3, 3) @ np.array(rect).reshape(3, 3).T, np.eye(3), atol=1e-6):
        raise r.fail("rectification_matrix", "expected a rotation matrix")
    p = r.matrix(doc, "projection_matrix", 3, 4)
    if p[0] <= 0 or p[5] <= 0 or p[8:11] != (0.0, 0.0, 1.0):
        raise r.fail("projection_matrix", "expected [fx', 0, cx', Tx, 0, fy', cy', Ty, 0, 0, 1, 0] with fx', fy' > 0")
    return CameraInfo(width, height, name, k, model, d, rect, p)


def _extrinsics(doc: Any, r: _Reader) -> Extrinsics:
    pre = "extrinsics."
    if not isinstance(doc, dict):
        raise r.fail("extrinsics", "expected a mapping")
    known = {f for f in Extrinsics.__dataclass_fields__}
    for key in doc:
        if key not in known:
            raise r.fail(pre + str(key), f"unknown key; known keys: {', '.join(known)}")
    ext = Extrinsics(
        height_m=r.number(doc, "height_m", pre),
        x_m=r.number(doc, "x_m", pre),
        y_m=r.number(doc, "y_m", pre),
        roll_rad=r.number(doc, "roll_rad", pre),
        pitch_rad=r.number(doc, "pitch_rad", pre),
        yaw_rad=r.number(doc, "yaw_rad", pre),
        frame_id=r.text(doc, "frame_id", pre, default="base_link"),
        camera_frame_id=r.text(doc, "camera_frame_id", pre, default="camera_link"),
    )
    if ext.height_m <= 0:
        raise r.fail(pre + "height_m", f"the camera must be above the ground (> 0 m), got {ext.height_m}")
    return ext


def _quality(doc: Any, r: _Reader) -> CalibrationQuality:
    pre = "calibration."
    if not isinstance(doc, dict):
        raise r.fail("calibration", "expected a mapping")
    return CalibrationQuality(
        rms_reprojection_px=r.number(doc, "rms_reprojection_px", pre),
        images_used=int(r.number(doc, "images_used", pre)),
        images_rejected=int(r.number(doc, "images_rejected", pre, default=0.0)),
        board=str(doc.get("board", "")),
        square_m=r.number(doc, "square_m", pre, default=0.0),
    )


def load_calibration(path: str | os.PathLike[str]) -> Calibration:
    """Read and validate a calibration file. Raises :class:`CalibrationError`."""
    where = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise CalibrationError(f"calibration file {where!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CalibrationError(f"{where}: cannot read calibration file: {e}") from None
    except yaml.YAMLError as e:
        raise CalibrationError(f"{where}: not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise CalibrationError(f"{where}: expected a camera_info mapping (image_width, camera_matrix, ...)")
    r = _Reader(where)
    for key in doc:
        if key not in _TOP_KEYS:
            raise r.fail(str(key), f"unknown key; known keys: {', '.join(_TOP_KEYS)}")
    camera = camera_info_from_dict(doc, where)
    ext = _extrinsics(doc["extrinsics"], r) if doc.get("extrinsics") is not None else None
    quality = _quality(doc["calibration"], r) if doc.get("calibration") is not None else None
    return Calibration(camera, ext, quality, where)


# --------------------------------------------------------------------------- writing


def _matrix_doc(values: tuple[float, ...], rows: int, cols: int) -> dict[str, Any]:
    return {"rows": rows, "cols": cols, "data": [float(v) for v in values]}


class _FlowListDumper(yaml.SafeDumper):
    """Block mappings, flow lists: ``data: [1.0, 0.0, ...]`` as ROS writes matrices."""

    def represent_list(self, data: list[Any]) -> yaml.Node:
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)

    yaml_representers: ClassVar[dict[Any, Any]] = {**yaml.SafeDumper.yaml_representers, list: represent_list}


def calibration_to_dict(calib: Calibration) -> dict[str, Any]:
    """The YAML document of ``calib`` (plain types, ROS key order)."""
    c = calib.camera
    doc: dict[str, Any] = {
        "image_width": c.image_width,
        "image_height": c.image_height,
        "camera_name": c.camera_name,
        "camera_matrix": _matrix_doc(c.camera_matrix, 3, 3),
        "distortion_model": c.distortion_model,
        "distortion_coefficients": _matrix_doc(c.distortion_coefficients, 1, len(c.distortion_coefficients)),
        "rectification_matrix": _matrix_doc(c.rectification_matrix, 3, 3),
        "projection_matrix": _matrix_doc(c.projection_matrix, 3, 4),
    }
    if calib.extrinsics is not None:
        doc["extrinsics"] = asdict(calib.extrinsics)
    if calib.quality is not None:
        doc["calibration"] = asdict(calib.quality)
    return doc


def save_calibration(calib: Calibration, path: str | os.PathLike[str]) -> None:
    """Write ``calib`` as YAML (matrices' ``data`` as flow lists, like ROS writes them)."""
    # Validate what we write by the same rules as what we read.
    camera_info_from_dict(calibration_to_dict(calib), str(path))
    text = yaml.dump(calibration_to_dict(calib), Dumper=_FlowListDumper, sort_keys=False, width=1000)
    Path(path).write_text(text)

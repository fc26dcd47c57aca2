"""camera_info + extrinsics files: round trip, examples, and errors that name file and field."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from perception.calibration.camera_file import (
    Calibration,
    CalibrationError,
    CalibrationQuality,
    Extrinsics,
    load_calibration,
    save_calibration,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = [REPO / "calib" / "example_pinhole.yaml", REPO / "calib" / "example_fisheye.yaml"]


def _write(tmp_path: Path, doc: dict, name: str = "cam.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def good_doc() -> dict:
    return yaml.safe_load(EXAMPLES[0].read_text())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_load_with_extrinsics_and_consistent_models(path: Path) -> None:
    calib = load_calibration(path)
    cam = calib.camera
    assert calib.extrinsics is not None and calib.extrinsics.height_m > 0
    assert cam.K.shape == (3, 3) and cam.P.shape == (3, 4) and cam.R.shape == (3, 3)
    assert len(cam.D) == (4 if cam.fisheye else 5)
    assert (cam.image_width, cam.image_height) in ((640, 480), (1280, 720))
    # the principal points lie inside the image, the undistorted camera is a pinhole one
    for m in (cam.K, cam.new_K):
        assert 0 < m[0, 2] < cam.image_width and 0 < m[1, 2] < cam.image_height


def test_round_trip_keeps_every_value(tmp_path: Path) -> None:
    calib = load_calibration(EXAMPLES[1])
    calib = replace(
        calib,
        extrinsics=Extrinsics(0.7, 0.1, -0.2, 0.01, 0.3, -0.5, "odom", "cam_link"),
        quality=CalibrationQuality(0.1234567, 14, 2, "9x6", 0.025),
    )
    out = tmp_path / "out.yaml"
    save_calibration(calib, out)
    back = load_calibration(out)
    assert replace(back, path="") == replace(calib, path="")
    # ROS layout: matrices as rows/cols/data
    doc = yaml.safe_load(out.read_text())
    assert doc["projection_matrix"]["rows"] == 3 and doc["projection_matrix"]["cols"] == 4
    assert doc["distortion_model"] == "equidistant"


@pytest.mark.parametrize(
    "field",
    [
        "image_width",
        "camera_matrix",
        "distortion_model",
        "distortion_coefficients",
        "projection_matrix",
        "rectification_matrix",
        "camera_name",
    ],
)
def test_missing_field_names_file_and_field(tmp_path: Path, good_doc: dict, field: str) -> None:
    del good_doc[field]
    path = _write(tmp_path, good_doc)
    with pytest.raises(CalibrationError, match=rf"{path}.*'{field}'.*missing"):
        load_calibration(path)


def test_missing_extrinsics_field_names_it(tmp_path: Path, good_doc: dict) -> None:
    del good_doc["extrinsics"]["height_m"]
    path = _write(tmp_path, good_doc)
    with pytest.raises(CalibrationError, match=rf"{path}.*'extrinsics.height_m'"):
        load_calibration(path)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("camera_matrix", {"rows": 3, "cols": 3, "data": [1.0] * 8}, "9 values"),
        ("camera_matrix", {"rows": 3, "cols": 4, "data": [1.0] * 12}, "3x3"),
        ("projection_matrix", {"rows": 3, "cols": 3, "data": [1.0] * 9}, "3x4"),
        ("distortion_coefficients", {"rows": 1, "cols": 4, "data": [0.0] * 4}, "1x5"),
        ("rectification_matrix", {"rows": 3, "cols": 3, "data": [2.0, 0, 0, 0, 1, 0, 0, 0, 1]}, "rotation"),
        ("camera_matrix", [500.0, 0, 320, 0, 500, 240, 0, 0, 1], "rows: 3, cols: 3"),
        ("camera_matrix", {"rows": 3, "cols": 3, "data": [-500.0, 0, 320, 0, 500, 240, 0, 0, 1]}, "fx, fy > 0"),
        ("distortion_model", "rational", "plumb_bob"),
        ("image_height", -3, "positive integer"),
        ("extrinsics", {"height_m": -1.0, "x_m": 0, "y_m": 0, "roll_rad": 0, "pitch_rad": 0, "yaw_rad": 0}, "above"),
        (
            "extrinsics",
            {"height_m": 1.0, "x_m": 0, "y_m": 0, "roll_rad": 0, "pitch_rad": "x", "yaw_rad": 0},
            "pitch_rad.*finite number",
        ),
    ],
)
def test_wrong_values_name_file_field_and_expectation(
    tmp_path: Path, good_doc: dict, field: str, value: object, expected: str
) -> None:
    good_doc[field] = value
    path = _write(tmp_path, good_doc)
    with pytest.raises(CalibrationError, match=rf"{path}.*'{field}.*{expected}"):
        load_calibration(path)


def test_fisheye_needs_four_coefficients(tmp_path: Path, good_doc: dict) -> None:
    good_doc["distortion_model"] = "equidistant"  # the pinhole file has 5 coefficients
    path = _write(tmp_path, good_doc)
    with pytest.raises(CalibrationError, match=r"'distortion_coefficients'.*1x4"):
        load_calibration(path)


def test_unknown_key_missing_file_and_bad_yaml(tmp_path: Path, good_doc: dict) -> None:
    good_doc["distorsion_model"] = "plumb_bob"
    with pytest.raises(CalibrationError, match=r"'distorsion_model'.*unknown key"):
        load_calibration(_write(tmp_path, good_doc))
    with pytest.raises(CalibrationError, match=r"nope\.yaml.*does not exist"):
        load_calibration(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("image_width: [640\n")
    with pytest.raises(CalibrationError, match=r"bad\.yaml.*not valid YAML"):
        load_calibration(bad)


def test_scaled_to_halves_focal_and_centre_but_not_distortion() -> None:
    cam = load_calibration(EXAMPLES[1]).camera
    half = cam.scaled_to(640, 360)
    np.testing.assert_allclose(half.K[:2], cam.K[:2] / 2)
    np.testing.assert_allclose(half.P[:2], cam.P[:2] / 2)
    assert half.distortion_coefficients == cam.distortion_coefficients
    with pytest.raises(CalibrationError, match="aspect ratio"):
        cam.scaled_to(640, 480)


def test_save_refuses_an_invalid_record(tmp_path: Path) -> None:
    cam = load_calibration(EXAMPLES[0]).camera
    with pytest.raises(CalibrationError, match="'projection_matrix'"):
        save_calibration(Calibration(replace(cam, projection_matrix=(1.0,) * 9)), tmp_path / "x.yaml")
    assert not (tmp_path / "x.yaml").exists()

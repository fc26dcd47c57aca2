"""Undistortion makes straight lines straight (check 2); preprocess undistorts before the
letterbox and says so in the frame header."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from calibration.calib_render import render_board

from perception.bus.pubsub import Received, header_for
from perception.bus.schema import Envelope, FrameHeader, Source
from perception.calibration.board import Board, find_corners
from perception.calibration.camera_file import Calibration, CalibrationError, load_calibration, save_calibration
from perception.calibration.undistort import Undistorter
from perception.camera.preprocess import PreprocessConfig, PreprocessLogic
from perception.geometry.letterbox import letterbox

BIG_BOARD = Board(9, 6, 0.05)


def _line_residuals_px(corners: np.ndarray, board: Board) -> float:
    """Largest distance of a corner from the straight line fitted (total least squares)
    through its row or column of the grid."""
    grid = corners.reshape(board.rows, board.cols, 2)
    worst = 0.0
    for line in [*grid, *grid.transpose(1, 0, 2)]:
        centred = line - line.mean(axis=0)
        normal = np.linalg.svd(centred)[2][-1]
        worst = max(worst, float(np.abs(centred @ normal).max()))
    return worst


def _big_board_image(rays_for, model: str) -> np.ndarray:
    """The board fronto-parallel, filling most of the image, where distortion bends it most."""
    cam, rays = rays_for(model)
    width_m = (BIG_BOARD.cols + 1) * BIG_BOARD.square_m
    z = cam.k[0, 0] * width_m / (0.8 * cam.size[0])
    centre = np.array([(BIG_BOARD.cols - 1) / 2, (BIG_BOARD.rows - 1) / 2, 0]) * BIG_BOARD.square_m
    tvec = np.array([0.0, 0.0, z]) - centre
    return render_board(rays, BIG_BOARD, np.zeros(3), tvec, np.random.default_rng(0))


@pytest.mark.parametrize("model", ["pinhole", "fisheye"])
def test_undistortion_straightens_grid_lines(rays_for, model: str) -> None:
    cam, _ = rays_for(model)
    raw = _big_board_image(rays_for, model)
    und = Undistorter(cam.info())
    fixed = und.apply(raw)
    assert fixed.shape == raw.shape and fixed.dtype == raw.dtype
    raw_corners = find_corners(raw, BIG_BOARD)
    fixed_corners = find_corners(fixed, BIG_BOARD)
    assert raw_corners is not None and fixed_corners is not None
    bent, straight = _line_residuals_px(raw_corners, BIG_BOARD), _line_residuals_px(fixed_corners, BIG_BOARD)
    assert bent > 2.0, f"the rendered grid should be visibly bent ({bent:.2f} px)"
    # corner detection itself is good to ~0.2 px on these images (the geometry is exact)
    assert straight < 0.3, f"undistorted grid lines are off a straight line by {straight:.3f} px"
    # the point mapping agrees with the image mapping, and inverts
    mapped = und.to_undistorted_px(raw_corners.reshape(-1, 2))
    assert np.abs(mapped - fixed_corners.reshape(-1, 2)).max() < 0.25
    np.testing.assert_allclose(und.to_raw_px(mapped), raw_corners.reshape(-1, 2), atol=1e-3)


def _received(image: np.ndarray) -> Received:
    env = Envelope("frames", 0, 0, Source("cam0", 0, 0), header_for(image))
    return Received(env, image)


@pytest.fixture
def calib_file(tmp_path: Path, rays_for) -> str:
    path = tmp_path / "truth.yaml"
    save_calibration(Calibration(rays_for("pinhole")[0].info()), path)
    return str(path)


def test_preprocess_undistorts_before_letterbox(rays_for, calib_file: str) -> None:
    raw = cv2.cvtColor(_big_board_image(rays_for, "pinhole"), cv2.COLOR_GRAY2BGR)
    logic = PreprocessLogic(PreprocessConfig(width=320, height=192, calib=calib_file))
    (out,) = logic.step(0, _received(raw))
    header: FrameHeader = out.payload  # type: ignore[assignment]
    assert header.undistorted and header.transform is not None
    expected, transform = letterbox(Undistorter(load_calibration(calib_file).camera).apply(raw), 320, 192)
    assert header.transform == transform and (transform.src_width, transform.src_height) == (640, 480)
    np.testing.assert_array_equal(out.pixels, expected)
    # without calib nothing is undistorted
    (plain,) = PreprocessLogic(PreprocessConfig(width=320, height=192)).step(0, _received(raw))
    assert not plain.payload.undistorted  # type: ignore[union-attr]
    assert not np.array_equal(plain.pixels, expected)


def test_preprocess_rescales_for_binned_frames_and_rejects_crops(rays_for, calib_file: str) -> None:
    raw = cv2.cvtColor(_big_board_image(rays_for, "pinhole"), cv2.COLOR_GRAY2BGR)
    half = cv2.resize(raw, (320, 240), interpolation=cv2.INTER_AREA)
    logic = PreprocessLogic(PreprocessConfig(width=320, height=240, calib=calib_file))
    (out,) = logic.step(0, _received(half))
    corners = find_corners(cv2.cvtColor(out.pixels, cv2.COLOR_BGR2GRAY), BIG_BOARD)
    assert corners is not None and _line_residuals_px(corners, BIG_BOARD) < 0.3
    with pytest.raises(CalibrationError, match=r"640x480.*640x360.*aspect ratio"):
        logic.step(0, _received(raw[:360]))


def test_preprocess_config_validate_loads_the_file(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match=r"missing\.yaml.*does not exist"):
        PreprocessConfig(calib=str(tmp_path / "missing.yaml")).validate()

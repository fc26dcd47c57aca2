"""Checkerboard calibration recovers a known camera from rendered images (check 1)."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from calibration.calib_render import random_poses, render_board

from perception.calibration.board import Board, calibrate
from perception.calibration.camera_file import CalibrationError, load_calibration
from perception.cli import main

N_IMAGES = 12


def _write_board_images(folder: Path, rays_for, board: Board, model: str) -> None:
    cam, rays = rays_for(model)
    rng = np.random.default_rng(7)
    for i, (rvec, tvec) in enumerate(random_poses(cam, board, N_IMAGES, seed=3)):
        cv2.imwrite(str(folder / f"board_{i:02d}.png"), render_board(rays, board, rvec, tvec, rng))
    # a frame where the board is not in view must be rejected, not break the calibration
    cv2.imwrite(str(folder / "empty.png"), np.full((cam.size[1], cam.size[0]), 110, np.uint8))


@pytest.mark.parametrize("model", ["pinhole", "fisheye"])
def test_cli_calibrates_back_to_the_true_camera(
    tmp_path: Path, rays_for, board: Board, model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    _write_board_images(images, rays_for, board, model)
    out = tmp_path / "cam.yaml"
    rc = main(
        [
            "calibrate",
            "--images",
            str(images),
            "--board",
            "9x6",
            "--square-m",
            "0.03",
            "--model",
            model,
            "--out",
            str(out),
            "--camera-name",
            "test",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0, printed
    calib = load_calibration(out)
    cam, truth = calib.camera, rays_for(model)[0]
    assert cam.distortion_model == ("equidistant" if model == "fisheye" else "plumb_bob")
    got = np.array([cam.K[0, 0], cam.K[1, 1], cam.K[0, 2], cam.K[1, 2]])
    want = np.array([truth.k[0, 0], truth.k[1, 1], truth.k[0, 2], truth.k[1, 2]])
    assert np.all(np.abs(got - want) / want < 0.01), (got, want)
    assert calib.quality is not None
    assert calib.quality.rms_reprojection_px < 0.5
    assert calib.quality.images_rejected >= 1 and "rejected empty.png" in printed
    assert calib.quality.images_used >= 8
    printed_rms = float(re.search(r"RMS reprojection error: ([0-9.]+) px", printed).group(1))  # type: ignore[union-attr]
    assert printed_rms == pytest.approx(calib.quality.rms_reprojection_px, abs=1e-4)
    # the recovered distortion, not just K, matches: same raw pixels for the same rays
    # (inside the image: outside, distortion polynomials are extrapolations)
    rays = np.array([[x, y, 1.0] for x in (-0.5, 0.0, 0.45) for y in (-0.35, 0.0, 0.3)])
    zero = np.zeros(3)
    project = cv2.fisheye.projectPoints if model == "fisheye" else cv2.projectPoints
    px = project(rays.reshape(-1, 1, 3), zero, zero, cam.K, cam.D)[0].reshape(-1, 2)
    assert np.abs(px - truth.project(rays)).max() < 1.0


def test_too_few_boards_is_a_clear_error(tmp_path: Path, board: Board) -> None:
    blank = [(f"{i}.png", np.full((480, 640), 120, np.uint8)) for i in range(4)]
    with pytest.raises(CalibrationError, match=r"only 0 image\(s\) show a full 9x6 board; need at least 3"):
        calibrate(blank, board)
    rc = main(
        [
            "calibrate",
            "--images",
            str(tmp_path / "none"),
            "--board",
            "9x6",
            "--square-m",
            "0.03",
            "--out",
            str(tmp_path / "x.yaml"),
        ]
    )
    assert rc == 2 and not (tmp_path / "x.yaml").exists()


@pytest.mark.parametrize("text", ["9", "9x", "ax6", "1x6", "9x6x2"])
def test_board_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="board"):
        Board.parse(text, 0.03)


def test_board_object_points_follow_opencv_order(board: Board) -> None:
    pts = board.object_points()
    assert pts.shape == (54, 3) and pts.dtype == np.float32
    np.testing.assert_allclose(pts[1], [0.03, 0.0, 0.0])  # columns first
    np.testing.assert_allclose(pts[9], [0.0, 0.03, 0.0])

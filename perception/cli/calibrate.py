"""``perception calibrate --images DIR --board 9x6 --square-m 0.025 --out calib/cam.yaml``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import numpy as np

from perception.calibration.board import Board, calibrate, read_images
from perception.calibration.camera_file import CalibrationError, load_calibration, save_calibration


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", required=True, metavar="DIR", help="folder of checkerboard images")
    p.add_argument("--board", required=True, metavar="COLSxROWS", help="inner corners, e.g. 9x6")
    p.add_argument("--square-m", required=True, type=float, metavar="SIZE", help="square side in metres")
    p.add_argument("--out", required=True, metavar="FILE.yaml", help="camera_info YAML to write")
    p.add_argument(
        "--model",
        choices=("pinhole", "fisheye"),
        default="pinhole",
        help="pinhole (plumb_bob) or fisheye (equidistant); default pinhole",
    )
    p.add_argument("--camera-name", default="camera", help="camera_name in the file")
    p.add_argument(
        "--extrinsics-from", metavar="FILE.yaml", help="copy the extrinsics block from this calibration file"
    )


def run(args: argparse.Namespace) -> int:
    try:
        board = Board.parse(args.board, args.square_m)
        extrinsics = load_calibration(args.extrinsics_from).extrinsics if args.extrinsics_from else None
        result = calibrate(read_images(args.images), board, args.model, args.camera_name)
    except (CalibrationError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, reason in result.rejected:
        print(f"rejected {name}: {reason}")
    for name, rms in result.per_image_rms_px:
        print(f"used     {name}: rms {rms:.3f} px")
    cam = result.calibration.camera
    np.set_printoptions(precision=4, suppress=True)
    print(
        f"model {cam.distortion_model}, {cam.image_width}x{cam.image_height}, "
        f"{len(result.per_image_rms_px)} images used, {len(result.rejected)} rejected"
    )
    print(f"K =\n{cam.K}\nD = {cam.D}")
    print(f"RMS reprojection error: {result.rms_px:.4f} px")
    save_calibration(replace(result.calibration, extrinsics=extrinsics), args.out)
    print(f"wrote {args.out}")
    return 0

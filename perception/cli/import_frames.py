"""``perception import-frames DIR [--masks DIR] [--fps F] --out DRIVE.mcap``."""

from __future__ import annotations

import argparse

from perception.drives.importer import FrameImportError, import_frames


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("frames", help="folder of frames (read in name order)")
    p.add_argument("--masks", help="folder of per-frame instance masks (PNG, same stems as the frames)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate for capture stamps (default 30)")
    p.add_argument("--out", required=True, help="drive file to write (.mcap)")
    p.add_argument(
        "--class",
        dest="class_name",
        default="car",
        help="class of the masked instances (default car, as in the DAVIS drives)",
    )
    p.add_argument("--camera-id", default="cam0")
    p.add_argument(
        "--min-size",
        type=int,
        default=0,
        dest="min_size_px",
        help="mark instances whose box is shorter than this (px) as ignore",
    )


def run(args: argparse.Namespace) -> int:
    try:
        res = import_frames(
            args.frames, args.out, args.masks, args.fps, args.class_name, args.camera_id, args.min_size_px
        )
    except (FrameImportError, ValueError) as e:
        print(f"error: {e}")
        return 2
    print(f"wrote {args.out}: {res.frames} frames, {res.frames_with_masks} with masks, {res.instances} instances")
    return 0

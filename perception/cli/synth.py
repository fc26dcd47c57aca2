"""``perception synth``: generate a synthetic drive with exact ground truth."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import cv2

from perception.synth.config import SCENARIOS, SynthConfig
from perception.synth.cutouts import CutoutError, load_cutouts
from perception.synth.generate import write_drive
from perception.synth.preview import contact_sheet, overlay

log = logging.getLogger("perception.synth")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="drive file to write (.mcap)")
    p.add_argument("--frames", type=int, default=150, help="number of frames (default 150)")
    p.add_argument("--seed", type=int, default=0, help="random seed: same arguments, same drive")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--scenario", default="urban", choices=sorted(SCENARIOS))
    p.add_argument("--objects", type=int, default=0, help="agents alive at once (0: the scenario's default)")
    p.add_argument(
        "--min-size",
        type=int,
        default=8,
        dest="min_size_px",
        help="instances whose visible box is shorter than this (px) are labelled ignore=True",
    )
    p.add_argument("--no-degrade", action="store_true", help="clean daylight camera (no night/blur/noise/JPEG)")
    p.add_argument("--coco-root", help="COCO or YOLO-seg dataset whose road objects are pasted in")
    p.add_argument("--paste-prob", type=float, default=0.35, help="share of agents drawn as pasted cut-outs")
    p.add_argument("--camera-id", default="synth0")
    p.add_argument("--preview", help="also write a contact sheet PNG (frames with masks overlaid)")
    p.add_argument("--preview-frames", type=int, default=9)


def run(args: argparse.Namespace) -> int:
    if not args.out and not args.preview:
        print("error: give --out DRIVE.mcap and/or --preview SHEET.png")
        return 2
    cfg = SynthConfig(
        frames=args.frames,
        seed=args.seed,
        width=args.width,
        height=args.height,
        fps=args.fps,
        scenario=args.scenario,
        objects=args.objects,
        min_size_px=args.min_size_px,
        degrade=not args.no_degrade,
        coco_root=args.coco_root,
        paste_prob=args.paste_prob,
        camera_id=args.camera_id,
    )
    try:
        cfg.validate()
        bank = load_cutouts(cfg.coco_root) if cfg.coco_root else None
    except (ValueError, CutoutError) as e:
        print(f"error: {e}")
        return 2
    out = args.out or "/dev/null"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # `--out drives/d21.mcap` in a new folder
    t0 = time.perf_counter()
    meta, kept = write_drive(cfg, out, bank=bank, keep=args.preview_frames if args.preview else 0)
    dt = time.perf_counter() - t0
    if args.out:
        print(
            f"wrote {args.out}: {cfg.frames} frames {cfg.width}x{cfg.height} scenario {cfg.scenario} "
            f"seed {cfg.seed} ({meta.notes}) in {dt:.1f} s ({cfg.frames / max(dt, 1e-9):.1f} frames/s)"
        )
    if args.preview:
        tiles = [overlay(f.image, f.ids, f.labels) for f in kept]
        sheet = contact_sheet(tiles, cols=3, tile_width=min(cfg.width, 640))
        if not cv2.imwrite(args.preview, sheet):
            print(f"error: could not write {args.preview}")
            return 1
        print(f"wrote {args.preview}: {len(tiles)} frames with masks overlaid")
    return 0

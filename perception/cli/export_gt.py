"""``perception export-gt DRIVE --coco OUT.json --mots OUT_DIR``: a drive's ground truth for
pycocotools and TrackEval (formats described in :mod:`perception.evaluation.gt_export`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from perception.drives.drive_file import DriveError, DriveReader
from perception.evaluation.gt_export import write_coco, write_mots_gt


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("drive", help="drive file (.mcap) with ground truth on topic 'gt'")
    p.add_argument("--coco", help="write COCO instances json (RLE masks) here")
    p.add_argument("--mots", help="write a TrackEval MOTSChallenge ground-truth tree under this folder")
    p.add_argument("--name", help="sequence name for MOTS (default: the drive file's stem)")
    p.add_argument(
        "--class-agnostic",
        action="store_true",
        help="MOTS: one sequence with every class instead of one sequence per class",
    )


def run(args: argparse.Namespace) -> int:
    if not args.coco and not args.mots:
        print("error: give --coco OUT.json and/or --mots OUT_DIR")
        return 2
    try:
        reader = DriveReader(args.drive)
        gts = reader.ground_truth()
    except DriveError as e:
        print(f"error: {e}")
        return 2
    if not gts:
        print(f"error: {args.drive} has no ground truth (topic 'gt' is empty)")
        return 2
    frames = sorted(gts.items())
    name = args.name or Path(args.drive).stem
    if args.coco:
        n = write_coco(args.coco, frames, file_prefix=name)
        print(f"wrote {args.coco}: {len(frames)} images, {n} annotations")
    if args.mots:
        seqs = write_mots_gt(args.mots, name, frames, per_class=not args.class_agnostic)
        print(f"wrote {args.mots}/gt: sequences {', '.join(seqs)}")
    return 0

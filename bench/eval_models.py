"""Mask AP of the bundled models on the held-out synthetic drive, in one run, beside the
figures their cards record.

    uv run python bench/eval_models.py [--drive DRIVE.mcap] [--cards models/a.toml ...] [--write-card]

Without ``--drive`` it makes the held-out drive the cards name (``perception synth --frames
150 --seed 9001 --scenario urban``; training never uses seeds in that range). Each model
runs through the torch-free runtime on every frame and is scored exactly as ``perception
eval`` scores a recorded run (ignored instances as crowd regions). ``--write-card`` stores
the figures in each card's ``[accuracy]`` table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from perception.classes import CLASSES
from perception.evaluation.offline import evaluate_segmenter
from perception.segmentation.card import CardError, load_card, set_card_value
from perception.segmentation.runtime import load_segmenter
from perception.synth import SynthConfig, write_drive

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = SynthConfig(frames=150, seed=9001, scenario="urban")
HELD_OUT_CMD = "perception synth --frames 150 --seed 9001 --scenario urban"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drive", type=Path, help="drive with ground truth (default: make the held-out drive)")
    ap.add_argument("--cards", nargs="*", default=[str(ROOT / "models" / "yolact_fast.toml"),
                                                   str(ROOT / "models" / "maskrcnn_accurate.toml")])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write-card", action="store_true", help="store the figures in each card's [accuracy]")
    args = ap.parse_args()
    drive = args.drive
    if drive is None:
        drive = Path(tempfile.mkdtemp(prefix="heldout-")) / "heldout.mcap"
        write_drive(HELD_OUT, drive)
        print(f"held-out drive: {HELD_OUT_CMD} -> {drive}")
    print(f"{'model':<20}{'AP':>7}{'AP50':>7}{'AP75':>7}{'card AP':>9}{'time':>7}  per class AP")
    aps: dict[str, float] = {}
    for path in args.cards:
        try:
            card = load_card(path)
            seg = load_segmenter(path, threads=args.threads)
        except (CardError, RuntimeError, ValueError) as e:
            print(f"{Path(path).stem:<20} not available: {e}")
            continue
        t0 = time.perf_counter()
        s = evaluate_segmenter(seg.predict, drive)
        dt = time.perf_counter() - t0
        per_class = "  ".join(f"{c} {s.per_class[c].ap:.3f}" for c in CLASSES
                              if c in s.per_class and s.per_class[c].ap is not None)
        card_ap = str(card.accuracy.get("mask_ap", "-"))
        aps[card.family] = s.ap or 0.0
        print(f"{card.name:<20}{s.ap or 0:7.3f}{s.ap50 or 0:7.3f}{s.ap75 or 0:7.3f}{card_ap:>9}{dt:6.0f}s  {per_class}")
        if args.write_card:
            for key, value in (("mask_ap", s.ap), ("mask_ap50", s.ap50), ("mask_ap75", s.ap75)):
                set_card_value(card.path, "accuracy", key, f"{value or 0:.4f}")
            set_card_value(card.path, "accuracy", "drive", HELD_OUT_CMD if args.drive is None else str(drive))
            set_card_value(card.path, "accuracy", "per_class", per_class)
            set_card_value(card.path, "accuracy", "command", "uv run python bench/eval_models.py --write-card")
            set_card_value(card.path, "accuracy", "status", "measured")
    if {"yolact", "maskrcnn"} <= set(aps):
        gap = (aps["maskrcnn"] - aps["yolact"]) * 100
        print(f"two-stage minus one-stage mask AP: {gap:+.1f} points (the model swap is worth having at >= 5)")


if __name__ == "__main__":
    main()

"""Mask AP of the bundled models on the held-out synthetic drives, in one run, beside the
figures their cards record.

    uv run python bench/eval_models.py [--frames 120] [--drive DRIVE.mcap] [--cards models/a.toml ...]
        [--write-card]

Without ``--drive`` it makes the six held-out drives of ``bench/heldout.py`` (urban,
highway, crowd; day and night; seeds 9100+, never used in training; 120 frames each, as
the issue's check replays them). Each model runs through the torch-free runtime on every
frame and is scored exactly as ``perception eval`` scores a recorded run (ignored instances
as crowd regions). ``--write-card`` stores the figures in each card's ``[accuracy]`` table:
``mask_ap`` is the mean over the drives, ``ap_<scenario>_<time>`` each drive's, and
``per_class`` the class APs pooled over all drives' frames.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.heldout import held_out_drives  # noqa: E402
from perception.bus.classes import CLASSES  # noqa: E402
from perception.evaluation.offline import evaluate_segmenter  # noqa: E402
from perception.segmentation.card import CardError, load_card, set_card_value  # noqa: E402
from perception.segmentation.families import load_segmenter  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drive", type=Path, help="one drive with ground truth instead of the held-out set")
    ap.add_argument("--frames", type=int, default=120, help="frames per held-out drive")
    ap.add_argument("--out", type=Path, default=None, help="folder for the held-out drives (default: temporary)")
    ap.add_argument(
        "--cards",
        nargs="*",
        default=[str(ROOT / "models" / "yolact_fast.toml"), str(ROOT / "models" / "maskrcnn_accurate.toml")],
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--first-seed",
        type=int,
        default=9100,
        help="held-out seeds start here (9100: the reported set; another range to choose settings on)",
    )
    ap.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="score with this [postprocess] score_threshold instead of the card's",
    )
    ap.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32"],
        choices=("fp32", "int8", "fp16"),
        help="score each card's file of these precisions (default fp32; int8: its [int8] file)",
    )
    ap.add_argument(
        "--write-card",
        action="store_true",
        help="store the figures in each card's [accuracy] (fp32) or its precision's table (mask_ap)",
    )
    args = ap.parse_args()
    if args.drive is not None:
        drives = [(args.drive.stem, args.drive)]
        described = str(args.drive)
    else:
        held = held_out_drives(args.out or Path(tempfile.mkdtemp(prefix="heldout-")), args.frames, args.first_seed)
        drives = [(d.name, d.path) for d in held]
        described = "; ".join(f"{d.name}: {d.command}" for d in held)
        print("held-out drives: " + described)
    names = [n for n, _ in drives]
    print(f"{'model':<20}" + "".join(f"{n:>15}" for n in names) + f"{'mean':>8}{'time':>7}")
    means: dict[str, float] = {}
    for path, precision in [(c, p) for c in args.cards for p in args.precisions]:
        try:
            card = load_card(path)
            if args.score_threshold is not None:
                card = replace(card, postprocess={**card.postprocess, "score_threshold": args.score_threshold})
            seg = load_segmenter(card, threads=args.threads, precision=precision)
        except (CardError, RuntimeError, ValueError) as e:
            print(f"{Path(path).stem:<20} {precision} not available: {e}")
            continue
        label = card.name if precision == "fp32" else f"{card.name} {precision}"
        t0 = time.perf_counter()
        scores = {n: evaluate_segmenter(seg.predict, p) for n, p in drives}
        dt = time.perf_counter() - t0
        aps = {n: s.ap or 0.0 for n, s in scores.items()}
        mean = float(np.mean(list(aps.values())))
        if precision == "fp32":
            means[card.family] = mean
        print(f"{label:<20}" + "".join(f"{aps[n]:>15.3f}" for n in names) + f"{mean:>8.3f}{dt:6.0f}s")
        per_class = {
            c: [s.per_class[c].ap for s in scores.values() if c in s.per_class and s.per_class[c].ap is not None]
            for c in CLASSES
        }
        classes = "  ".join(f"{c} {np.mean(v):.3f}" for c, v in per_class.items() if v)
        print(f"{'':<20}per class (mean over drives): {classes}")
        for n, s in scores.items():
            line = "  ".join(
                f"{c} {s.per_class[c].ap:.3f}" for c in CLASSES if c in s.per_class and s.per_class[c].ap is not None
            )
            print(f"{'':<20}{n:<15} AP50 {s.ap50 or 0:.3f}  {line}")
        if args.write_card and precision != "fp32":
            set_card_value(card.path, precision, "mask_ap", round(mean, 4))
        elif args.write_card:
            set_card_value(card.path, "accuracy", "mask_ap", f"{mean:.4f}")
            for n in names:
                set_card_value(card.path, "accuracy", f"ap_{n.replace('-', '_')}", f"{aps[n]:.4f}")
            set_card_value(card.path, "accuracy", "drive", described)
            set_card_value(card.path, "accuracy", "per_class", classes)
            set_card_value(card.path, "accuracy", "command", "uv run python bench/eval_models.py --write-card")
            set_card_value(card.path, "accuracy", "status", "measured")
    if {"yolact", "maskrcnn"} <= set(means):
        gap = (means["maskrcnn"] - means["yolact"]) * 100
        print(
            f"two-stage minus one-stage mask AP (mean over drives): {gap:+.1f} points "
            "(the model swap is worth having at >= 5)"
        )


if __name__ == "__main__":
    main()
